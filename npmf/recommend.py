"""Top-N recommendation from a fitted rating model."""

import numpy as np

from npmf.ids import check_indices
from npmf.train import predict_batches


def top_n(model, u, n):
    """Rank the items a user has not rated by predicted rating.

    Parameters
    ----------
    model : RatingModel
        Fitted estimator.
    u : int
        User row index.
    n : int
        How many items.

    Returns
    -------
    list of tuple (int, float)
        ``(item index, predicted rating)``, best first.

    Raises
    ------
    IndexError
        If ``u`` is not a row of the user table.

    Notes
    -----
    Items the user rated in training are left out, and so are items with no
    training rating at all: their rows were never fitted.
    """
    check_indices(np.array([u]), len(model.user_map_), "u")
    n_items = len(model.item_map_)
    items = np.arange(n_items, dtype=np.int32)  # (n_items,)
    users = np.full(n_items, u, dtype=np.int32)  # (n_items,)
    scores = model.mu_ + predict_batches(model._core(), model.params_, users, items)

    # leave out rated and never-trained items
    allowed = model.item_seen_.copy()  # (n_items,)
    rated = model.train_pairs_[model.train_pairs_[:, 0] == u, 1]
    allowed[rated] = False
    candidates = np.flatnonzero(allowed)
    order = np.argsort(-scores[candidates], kind="stable")[:n]
    return [(int(candidates[j]), float(scores[candidates[j]])) for j in order]
