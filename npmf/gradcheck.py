"""Central finite differences against the hand-written gradients.

Every gradient of every model is checked the same way: on a tiny float64
problem whose batch repeats a user and an item, perturb each entry of each
parameter by ``+-eps``, recompute the whole loss (data loss plus the
whole-table L2 penalty, exactly what a training step differentiates) and
compare ``(loss(W + eps) - loss(W - eps)) / (2 eps)`` with the analytic
gradient.

Notes
-----
The relative error of a parameter is ``max|g - n| / max(max|g|, max|n|)``
over all its entries, with ``g`` the analytic and ``n`` the numerical
gradient. Dividing by the largest entry rather than entry by entry keeps
entries that are nearly zero (rows outside the batch, where only the
penalty acts) from inflating the error. In float64 with ``eps = 1e-6`` the
truncation error is about ``eps ** 2`` and the rounding error about
``1e-16 / eps``, so a correct gradient gives errors near ``1e-9``; the
threshold is ``1e-6``.
"""

import numpy as np

from npmf.layers import dense_forward
from npmf.losses import get_loss
from npmf.models import mf, mlp
from npmf.optim import add_l2_grads, l2_penalty

GRADCHECK_TOLERANCE = 1e-6
"""Largest relative error a correct float64 gradient may show."""

# tiny config: 4 users, 3 items; user 0 appears three times, item 2 three
# times, and the pair (0, 2) twice; user 2 is never in the batch
TINY_U = np.array([0, 0, 1, 3, 3, 0])
TINY_I = np.array([2, 2, 0, 1, 2, 0])
TINY_SHAPE = {"n_users": 4, "n_items": 3, "n_factors": 2, "hidden": (5, 3)}


def make_core(model, activation="linear"):
    """Return the math core of a model by name.

    Parameters
    ----------
    model : {"mf", "deep"}
        Model name.
    activation : str, default="linear"
        Hidden activation of the deep model (ignored for ``mf``).

    Returns
    -------
    module or MLPCore
        Object with ``forward`` and ``backward``.

    Raises
    ------
    ValueError
        If the model name is unknown.
    """
    if model == "mf":
        return mf
    if model == "deep":
        return mlp.make(activation)
    raise ValueError(f"model must be 'mf' or 'deep', got {model!r}")


def loss_and_grads(core, params, u, i, r, *, loss="rmse", l2=0.01):
    """Total step loss and its gradient, composed as a training step does.

    Parameters
    ----------
    core : module or MLPCore
        Model math core.
    params : dict of str to ndarray
        Parameters (not modified).
    u : ndarray of shape (batch,)
        User indices.
    i : ndarray of shape (batch,)
        Item indices.
    r : ndarray of shape (batch,)
        Centred targets.
    loss : {"rmse", "mse"}, default="rmse"
        Data loss.
    l2 : float, default=0.01
        Whole-table penalty weight on ``P``, ``Q``, ``bu``, ``bi``.

    Returns
    -------
    total : float
        ``loss(r_hat, r) + l2 * sum(W ** 2)`` over the four tables.
    grads : dict of str to ndarray
        Its gradient, keyed like ``params``.

    Notes
    -----
    The same four calls as :func:`npmf.train.train_step`, without the
    optimizer step: forward, loss, backward, then ``add_l2_grads``.
    """
    # forward pass, data loss and penalty
    r_hat, cache = core.forward(params, u, i)  # (batch,)
    data_loss, dr_hat = get_loss(loss)(r_hat, r)  # scalar, (batch,)
    penalty = l2_penalty(params, l2)

    # backward pass: data loss, then d penalty / dW = 2 l2 W
    grads = core.backward(params, cache, dr_hat)
    add_l2_grads(grads, params, l2)
    return data_loss + penalty, grads


def numerical_gradient(total_loss, W, eps=1e-6):
    """Central differences of a scalar function of one array, in place.

    Parameters
    ----------
    total_loss : callable
        ``total_loss() -> float``, reading ``W`` when called.
    W : ndarray
        Array to perturb; every entry is restored afterwards.
    eps : float, default=1e-6
        Perturbation.

    Returns
    -------
    ndarray of the shape of W
        ``(total_loss(W + eps e_j) - total_loss(W - eps e_j)) / (2 eps)``
        for every entry ``j``.
    """
    numeric = np.zeros(W.shape, dtype=np.float64)
    for idx in np.ndindex(W.shape):
        old = W[idx]

        # loss one step up and one step down, then restore
        W[idx] = old + eps
        up = total_loss()
        W[idx] = old - eps
        down = total_loss()
        W[idx] = old

        numeric[idx] = (up - down) / (2 * eps)
    return numeric


def relative_error(analytic, numeric):
    """Largest difference over the largest magnitude of either gradient.

    Parameters
    ----------
    analytic : ndarray
        Hand-written gradient.
    numeric : ndarray of the same shape
        Finite-difference gradient.

    Returns
    -------
    float
        ``max|analytic - numeric| / max(max|analytic|, max|numeric|)``, or
        the absolute difference when both are zero.
    """
    diff = np.max(np.abs(analytic - numeric))
    scale = max(np.max(np.abs(analytic)), np.max(np.abs(numeric)))
    return float(diff / scale) if scale > 0 else float(diff)


def tiny_problem(model="mf", activation="linear", seed=0):
    """Build a float64 problem small enough for finite differences.

    Parameters
    ----------
    model : {"mf", "deep"}, default="mf"
        Model name.
    activation : str, default="linear"
        Hidden activation of the deep model.
    seed : int, default=0
        Seed of the draws.

    Returns
    -------
    core : module or MLPCore
        Model math core.
    params : dict of str to ndarray
        float64 parameters, every entry uniform on [-1, 1) so that data and
        penalty gradients are both visible.
    u, i : ndarray of shape (6,)
        :data:`TINY_U`, :data:`TINY_I`: repeated users, items and a pair.
    r : ndarray of shape (6,)
        Standard normal targets.

    Notes
    -----
    For the deep model with relu the draw is repeated until every hidden
    pre-activation is at least ``1e-3`` from the kink at 0, where the
    derivative jumps and central differences are meaningless.
    """
    core = make_core(model, activation)
    for attempt in range(100):
        rng = np.random.default_rng([seed, attempt])
        params = _tiny_params(model, rng)
        r = rng.normal(size=len(TINY_U))  # (batch,)
        if model == "mf" or _min_abs_preactivation(core, params) > 1e-3:
            return core, params, TINY_U.copy(), TINY_I.copy(), r
    raise RuntimeError("no draw kept every pre-activation away from 0")


def _tiny_params(model, rng):
    shape = TINY_SHAPE
    if model == "mf":
        params = mf.init_params(
            shape["n_users"], shape["n_items"], shape["n_factors"], rng
        )
    else:
        params = mlp.init_params(
            shape["n_users"],
            shape["n_items"],
            shape["n_factors"],
            shape["hidden"],
            rng,
        )
    return {key: rng.uniform(-1.0, 1.0, size=W.shape) for key, W in params.items()}


def _min_abs_preactivation(core, params):
    _, (_, _, inputs) = core.forward(params, TINY_U, TINY_I)
    smallest = np.inf
    for layer in range(1, len(inputs)):
        z = dense_forward(inputs[layer - 1], params[f"W{layer}"], params[f"b{layer}"])
        smallest = min(smallest, float(np.min(np.abs(z))))
    return smallest


def check_gradients(core, params, u, i, r, *, loss="rmse", l2=0.01, eps=1e-6):
    """Compare every analytic gradient with central differences.

    Parameters
    ----------
    core : module or MLPCore
        Model math core.
    params : dict of str to ndarray
        float64 parameters; perturbed in place and restored.
    u : ndarray of shape (batch,)
        User indices.
    i : ndarray of shape (batch,)
        Item indices.
    r : ndarray of shape (batch,)
        Centred targets.
    loss : {"rmse", "mse"}, default="rmse"
        Data loss.
    l2 : float, default=0.01
        Whole-table penalty weight.
    eps : float, default=1e-6
        Perturbation.

    Returns
    -------
    dict of str to float
        Relative error (see :func:`relative_error`) per parameter key.

    Raises
    ------
    TypeError
        If a parameter is not float64 (float32 differences are meaningless
        at ``eps = 1e-6``).
    """
    for key, W in params.items():
        if W.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 parameters, {key} is {W.dtype}")
    _, grads = loss_and_grads(core, params, u, i, r, loss=loss, l2=l2)

    def total_loss():
        return loss_and_grads(core, params, u, i, r, loss=loss, l2=l2)[0]

    return {
        key: relative_error(grads[key], numerical_gradient(total_loss, W, eps))
        for key, W in params.items()
    }
