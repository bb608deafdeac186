"""Layers as forward/backward pairs: embedding lookup, dense, activations.

Every ``*_forward`` returns its output and a cache; the matching
``*_backward`` sits right under it and maps the output gradient back to
input and parameter gradients.
"""

import numpy as np


def embedding_forward(table, idx):
    """Look up rows of an embedding table.

    Parameters
    ----------
    table : ndarray of shape (n_rows, k) or (n_rows,)
        Embedding table.
    idx : ndarray of shape (batch,)
        Row indices, each in ``[0, n_rows)``.

    Returns
    -------
    out : ndarray of shape (batch, k) or (batch,)
        ``table[idx]``.
    """
    return table[idx]  # (batch, k)


def embedding_backward(dout, idx, n_rows):
    """Scatter the gradient of looked-up rows back into a table gradient.

    Parameters
    ----------
    dout : ndarray of shape (batch, k) or (batch,)
        Gradient of the loss with respect to ``table[idx]``.
    idx : ndarray of shape (batch,)
        The indices used in the forward lookup.
    n_rows : int
        Number of rows of the table.

    Returns
    -------
    dtable : ndarray of shape (n_rows, k) or (n_rows,)
        Gradient with respect to the whole table; rows looked up several
        times accumulate the sum of their gradients, rows never looked up
        are zero.

    Notes
    -----
    ``dtable[j] = sum over b with idx[b] == j of dout[b]``. A plain
    ``dtable[idx] += dout`` would keep only one of the repeated rows, so the
    sum is taken with ``np.add.at``.
    """
    # scatter-add: repeated ids accumulate
    dtable = np.zeros((n_rows,) + dout.shape[1:], dtype=dout.dtype)  # (n_rows, k)
    np.add.at(dtable, idx, dout)
    return dtable
