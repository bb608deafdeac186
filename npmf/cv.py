"""Cross-validation over fixed folds (the canonical ml-100k ``u1..u5`` files)."""

import logging
import time

import numpy as np

logger = logging.getLogger(__name__)


def fit_and_score(model, train, test, *, on_epoch_end=None):
    """Fit a fresh estimator on one fold and score it on the fold's test part.

    Parameters
    ----------
    model : RatingModel
        Unfitted estimator; fitted in place.
    train, test : DataFrame
        Columns ``user``, ``item``, ``rating``.
    on_epoch_end : callable, optional
        Passed to ``fit``.

    Returns
    -------
    dict
        ``rmse``, ``mae``, ``n``, the known-row scores of
        :meth:`RatingModel.evaluate`, ``epochs`` trained and ``seconds``.

    Notes
    -----
    The test part is used only for the final score: it is not passed as
    validation data, so nothing of it reaches training or early stopping.
    Tables cover the ids of both parts, as the tutorial's do.
    """
    t0 = time.perf_counter()
    user_ids = np.unique(
        np.concatenate([train["user"].to_numpy(), test["user"].to_numpy()])
    )
    item_ids = np.unique(
        np.concatenate([train["item"].to_numpy(), test["item"].to_numpy()])
    )
    model.fit(
        train[["user", "item"]],
        train["rating"].to_numpy(),
        user_ids=user_ids,
        item_ids=item_ids,
        on_epoch_end=on_epoch_end,
    )
    scores = model.evaluate(test[["user", "item"]], test["rating"].to_numpy())
    scores["epochs"] = len(model.history_)
    scores["seconds"] = time.perf_counter() - t0
    return scores


def summarize(fold_scores):
    """Mean and standard deviation of RMSE and MAE over folds.

    Parameters
    ----------
    fold_scores : list of dict
        Outputs of :func:`fit_and_score`.

    Returns
    -------
    dict
        ``mean_rmse``, ``std_rmse``, ``mean_mae``, ``std_mae`` (population
        standard deviation over folds) and ``n_folds``.
    """
    rmse = np.array([s["rmse"] for s in fold_scores])  # (n_folds,)
    mae = np.array([s["mae"] for s in fold_scores])  # (n_folds,)
    return {
        "mean_rmse": float(rmse.mean()),
        "std_rmse": float(rmse.std()),
        "mean_mae": float(mae.mean()),
        "std_mae": float(mae.std()),
        "n_folds": len(fold_scores),
    }
