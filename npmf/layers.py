"""Layers as forward/backward pairs: embedding lookup, dense, activations.

Every ``*_forward`` returns its output and a cache; the matching
``*_backward`` sits right under it and maps the output gradient back to
input and parameter gradients.
"""

from collections.abc import Callable
from typing import NamedTuple

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


def glorot_uniform(fan_in, fan_out, rng, dtype=np.float32):
    """Draw a dense kernel like Keras's default ``glorot_uniform``.

    Parameters
    ----------
    fan_in : int
        Input width of the layer.
    fan_out : int
        Output width of the layer.
    rng : numpy.random.Generator
        Source of randomness; only ``rng.uniform(low, high, size=...)`` is
        called.
    dtype : numpy dtype, default=np.float32
        Kernel dtype.

    Returns
    -------
    W : ndarray of shape (fan_in, fan_out)
        Uniform on ``[-L, L)`` with ``L = sqrt(6 / (fan_in + fan_out))``.

    Notes
    -----
    ``Var(W) = L ** 2 / 3 = 2 / (fan_in + fan_out)``, the Glorot-Bengio choice
    that keeps activation and gradient variances level across a linear layer.
    For the tutorial's 402 -> 2048 layer ``L = 0.049487``
    (``KERAS_SEMANTICS.md`` section 1).

    NOTE: NumPy draws, not TensorFlow's Philox stream: the distribution
    matches Keras, the values do not. Parity tests copy weights instead.

    References
    ----------
    X. Glorot and Y. Bengio, "Understanding the difficulty of training deep
    feedforward neural networks", AISTATS 2010, equation 16.
    """
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype)  # (in, out)


def dense_forward(a_in, W, b):
    """Affine layer ``z = a_in @ W + b``.

    Parameters
    ----------
    a_in : ndarray of shape (batch, in)
        Layer input.
    W : ndarray of shape (in, out)
        Kernel, stored ``(in, out)`` as Keras stores it.
    b : ndarray of shape (out,)
        Bias.

    Returns
    -------
    z : ndarray of shape (batch, out)
        Pre-activation.

    Notes
    -----
    The cache for :func:`dense_backward` is ``a_in`` itself, which the caller
    already holds, so nothing else is returned.
    """
    # affine map; the bias is added in place to the fresh matmul result
    z = a_in @ W  # (batch, out)
    z += b
    return z


def dense_backward(dz, a_in, W):
    """Gradients of an affine layer.

    Parameters
    ----------
    dz : ndarray of shape (batch, out)
        Gradient of the loss with respect to the layer output ``z``.
    a_in : ndarray of shape (batch, in)
        The input used in the forward pass.
    W : ndarray of shape (in, out)
        Kernel used in the forward pass.

    Returns
    -------
    da_in : ndarray of shape (batch, in)
        ``dz @ W.T``.
    dW : ndarray of shape (in, out)
        ``a_in.T @ dz``.
    db : ndarray of shape (out,)
        ``dz`` summed over the batch.

    Notes
    -----
    With ``z[b, o] = sum_j a_in[b, j] W[j, o] + b[o]``::

        dW[j, o]    = sum_b a_in[b, j] dz[b, o]
        db[o]       = sum_b dz[b, o]
        da_in[b, j] = sum_o dz[b, o] W[j, o]

    The transposes are views; BLAS reads them without copying.
    """
    # d z / d W = a_in, summed over the batch
    dW = a_in.T @ dz  # (in, out)

    # d z / d b = 1, summed over the batch
    db = dz.sum(axis=0)  # (out,)

    # d z / d a_in = W
    da_in = dz @ W.T  # (batch, in)
    return da_in, dW, db


# Activations. Each derivative is written in terms of the output ``a``, so a
# layer caches ``a`` only and never keeps its pre-activation ``z``.


def linear_forward(z):
    """Identity activation ``a = z``.

    Parameters
    ----------
    z : ndarray of shape (batch, h)
        Pre-activation.

    Returns
    -------
    a : ndarray of shape (batch, h)
        ``z`` itself, not a copy.
    """
    return z


def linear_backward(da, a):
    """Gradient through the identity: ``dz = da``.

    Parameters
    ----------
    da : ndarray of shape (batch, h)
        Gradient with respect to the activation output.
    a : ndarray of shape (batch, h)
        Activation output (unused; kept for a common signature).

    Returns
    -------
    dz : ndarray of shape (batch, h)
        ``da`` itself, not a copy.
    """
    return da


def relu_forward(z):
    """Rectifier ``a = max(z, 0)``.

    Parameters
    ----------
    z : ndarray of shape (batch, h)
        Pre-activation.

    Returns
    -------
    a : ndarray of shape (batch, h)
        ``max(z, 0)``.
    """
    return np.maximum(z, z.dtype.type(0))  # (batch, h)


def relu_backward(da, a):
    """Gradient through the rectifier: ``dz = da`` where ``a > 0``, else 0.

    Parameters
    ----------
    da : ndarray of shape (batch, h)
        Gradient with respect to the activation output.
    a : ndarray of shape (batch, h)
        Activation output ``max(z, 0)``.

    Returns
    -------
    dz : ndarray of shape (batch, h)
        ``da * [a > 0]``.

    Notes
    -----
    ``a > 0`` exactly when ``z > 0``; at ``z = 0`` the derivative is taken as
    0, as TensorFlow's ``ReluGrad`` does.
    """
    # d relu / d z = [z > 0] = [a > 0]
    return np.where(a > 0, da, da.dtype.type(0))  # (batch, h)


def sigmoid_forward(z):
    """Logistic function ``a = 1 / (1 + exp(-z))``.

    Parameters
    ----------
    z : ndarray of shape (batch, h)
        Pre-activation.

    Returns
    -------
    a : ndarray of shape (batch, h)
        Values in ``[0, 1]``.

    Notes
    -----
    Computed as ``0.5 + 0.5 tanh(z / 2)``, the same function, which never
    overflows for large ``|z|`` the way ``exp(-z)`` does.
    """
    half = z.dtype.type(0.5)
    # sigmoid(z) = (1 + tanh(z / 2)) / 2
    a = np.tanh(half * z)  # (batch, h)
    a *= half
    a += half
    return a


def sigmoid_backward(da, a):
    """Gradient through the logistic function: ``dz = da a (1 - a)``.

    Parameters
    ----------
    da : ndarray of shape (batch, h)
        Gradient with respect to the activation output.
    a : ndarray of shape (batch, h)
        Activation output ``sigmoid(z)``.

    Returns
    -------
    dz : ndarray of shape (batch, h)
        ``da * a * (1 - a)``.
    """
    # d sigmoid / d z = a (1 - a)
    return da * (a * (a.dtype.type(1) - a))  # (batch, h)


def tanh_forward(z):
    """Hyperbolic tangent ``a = tanh(z)``.

    Parameters
    ----------
    z : ndarray of shape (batch, h)
        Pre-activation.

    Returns
    -------
    a : ndarray of shape (batch, h)
        Values in ``[-1, 1]``.
    """
    return np.tanh(z)  # (batch, h)


def tanh_backward(da, a):
    """Gradient through the hyperbolic tangent: ``dz = da (1 - a ** 2)``.

    Parameters
    ----------
    da : ndarray of shape (batch, h)
        Gradient with respect to the activation output.
    a : ndarray of shape (batch, h)
        Activation output ``tanh(z)``.

    Returns
    -------
    dz : ndarray of shape (batch, h)
        ``da * (1 - a * a)``.
    """
    # d tanh / d z = 1 - a^2
    return da * (a.dtype.type(1) - a * a)  # (batch, h)


class Activation(NamedTuple):
    """An activation as a forward/backward pair.

    Parameters
    ----------
    name : str
        Keras name of the activation.
    forward : callable
        ``forward(z) -> a``.
    backward : callable
        ``backward(da, a) -> dz``; the derivative uses the output ``a``.
    """

    name: str
    forward: Callable
    backward: Callable


ACTIVATIONS = {
    "linear": Activation("linear", linear_forward, linear_backward),
    "relu": Activation("relu", relu_forward, relu_backward),
    "sigmoid": Activation("sigmoid", sigmoid_forward, sigmoid_backward),
    "tanh": Activation("tanh", tanh_forward, tanh_backward),
}
"""Activations by Keras name: ``linear``, ``relu``, ``sigmoid``, ``tanh``."""
