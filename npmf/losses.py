"""Losses, each as a value function beside its gradient.

The targets ``r`` and predictions ``r_hat`` are always 1-D of the same
length; a mismatch raises instead of broadcasting ``(batch,)`` against
``(batch, 1)`` into a ``(batch, batch)`` matrix.
"""

import numpy as np

LOSSES = ("rmse", "mse")


def _check_same_shape(r_hat, r):
    if r_hat.ndim != 1 or r_hat.shape != r.shape:
        raise ValueError(
            f"loss needs predictions and targets of the same shape (batch,), "
            f"got r_hat {r_hat.shape} and r {r.shape}"
        )


def rmse_loss(r_hat, r):
    """Batch root mean squared error and its gradient.

    Parameters
    ----------
    r_hat : ndarray of shape (batch,)
        Predictions.
    r : ndarray of shape (batch,)
        Targets.

    Returns
    -------
    loss : float
        ``sqrt(mean(e ** 2))`` with ``e = r_hat - r``.
    dr_hat : ndarray of shape (batch,)
        ``e / (batch * loss)``.

    Notes
    -----
    ``d sqrt(s) / ds = 1 / (2 sqrt(s))`` and ``ds / dr_hat_b = 2 e_b / batch``
    with ``s = mean(e ** 2)``, so ``dloss / dr_hat_b = e_b / (batch * loss)``.
    This is the tutorial's Keras loss on aligned shapes
    (``KERAS_SEMANTICS.md`` section 3). At ``loss == 0`` the gradient is
    undefined; like ``tf.sqrt`` it comes out non-finite there.
    """
    _check_same_shape(r_hat, r)
    batch = r.shape[0]

    # residual and its root mean square
    e = r_hat - r  # (batch,)
    loss = np.sqrt(np.mean(e * e))

    # d sqrt(mean(e^2)) / d r_hat
    dr_hat = e / (batch * loss)  # (batch,)
    return float(loss), dr_hat


def mse_loss(r_hat, r):
    """Batch mean squared error and its gradient.

    Parameters
    ----------
    r_hat : ndarray of shape (batch,)
        Predictions.
    r : ndarray of shape (batch,)
        Targets.

    Returns
    -------
    loss : float
        ``mean(e ** 2)`` with ``e = r_hat - r``.
    dr_hat : ndarray of shape (batch,)
        ``2 e / batch``.
    """
    _check_same_shape(r_hat, r)
    batch = r.shape[0]

    # residual and its mean square
    e = r_hat - r  # (batch,)
    loss = np.mean(e * e)

    # d mean(e^2) / d r_hat
    dr_hat = (2.0 / batch) * e  # (batch,)
    return float(loss), dr_hat.astype(r_hat.dtype, copy=False)


def get_loss(name):
    """Return the loss function called ``name`` (``"rmse"`` or ``"mse"``).

    Parameters
    ----------
    name : str
        Loss name.

    Returns
    -------
    callable
        ``f(r_hat, r) -> (loss, dr_hat)``.

    Raises
    ------
    ValueError
        If the name is unknown.
    """
    if name == "rmse":
        return rmse_loss
    if name == "mse":
        return mse_loss
    raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")
