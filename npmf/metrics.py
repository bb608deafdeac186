"""Evaluation metrics on whole sets of predictions."""

import numpy as np


def _check(r_hat, r):
    r_hat = np.asarray(r_hat)
    r = np.asarray(r)
    if r_hat.ndim != 1 or r_hat.shape != r.shape:
        raise ValueError(
            f"metrics need predictions and targets of the same shape (n,), "
            f"got {r_hat.shape} and {r.shape}"
        )
    if r.size == 0:
        raise ValueError("metrics need at least one rating, got 0")
    return r_hat.astype(np.float64), r.astype(np.float64)


def rmse(r_hat, r):
    """Root mean squared error over the whole set.

    Parameters
    ----------
    r_hat : array-like of shape (n,)
        Predictions.
    r : array-like of shape (n,)
        Targets.

    Returns
    -------
    float
        ``sqrt(mean((r_hat - r) ** 2))``, accumulated in float64.

    Raises
    ------
    ValueError
        If the shapes differ or are not 1-D (no broadcasting), or n is 0.
    """
    r_hat, r = _check(r_hat, r)
    return float(np.sqrt(np.mean((r_hat - r) ** 2)))


def mae(r_hat, r):
    """Mean absolute error over the whole set.

    Parameters
    ----------
    r_hat : array-like of shape (n,)
        Predictions.
    r : array-like of shape (n,)
        Targets.

    Returns
    -------
    float
        ``mean(|r_hat - r|)``, accumulated in float64.

    Raises
    ------
    ValueError
        If the shapes differ or are not 1-D, or n is 0.
    """
    r_hat, r = _check(r_hat, r)
    return float(np.mean(np.abs(r_hat - r)))
