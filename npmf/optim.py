"""Optimizers and the L2 penalty, in one place.

An optimizer sees parameters and gradients and nothing else: ``step``
updates every array of ``params`` in place from the matching array of
``grads``. The penalty helpers add the tutorial's whole-table L2 term to a
loss and its gradient to a gradient dict.
"""

import numpy as np

from npmf.models import EMBEDDING_KEYS

OPTIMIZERS = ("sgd", "adamax")


def l2_penalty(params, l2, keys=EMBEDDING_KEYS):
    """Whole-table L2 penalty ``l2 * sum(W ** 2)`` over the named tables.

    Parameters
    ----------
    params : dict of str to ndarray
        Model parameters.
    l2 : float
        Penalty weight (the tutorial's ``l2(0.01)``).
    keys : tuple of str, default=EMBEDDING_KEYS
        Tables the penalty covers: ``P``, ``Q``, ``bu`` and ``bi``.

    Returns
    -------
    penalty : float
        ``sum over W in keys of l2 * sum(W ** 2)``.

    Notes
    -----
    Keras adds ``l2 * sum(W ** 2)`` of every regularised table to the batch
    loss once per step, over all rows, not only the batch's rows
    (``KERAS_SEMANTICS.md`` section 2).
    """
    if l2 == 0:
        return 0.0
    return float(sum(l2 * np.sum(params[key] * params[key]) for key in keys))


def add_l2_grads(grads, params, l2, keys=EMBEDDING_KEYS):
    """Add the gradient ``2 * l2 * W`` of the whole-table penalty in place.

    Parameters
    ----------
    grads : dict of str to ndarray
        Gradients of the data loss, keyed like ``params``; updated in place.
    params : dict of str to ndarray
        Model parameters.
    l2 : float
        Penalty weight.
    keys : tuple of str, default=EMBEDDING_KEYS
        Tables the penalty covers.

    Returns
    -------
    grads : dict of str to ndarray
        The same dict, for chaining.

    Notes
    -----
    ``d (l2 * sum(W ** 2)) / dW = 2 * l2 * W`` on every row, so the gradient
    of an embedding table is dense even when the batch touches few rows.
    """
    if l2 == 0:
        return grads
    for key in keys:
        W = params[key]
        # d (l2 W^2) / dW = 2 l2 W, on every row
        grads[key] += W.dtype.type(2.0 * l2) * W  # (n_rows, k)
    return grads


BIAS_KEYS = ("bu", "bi")
"""The user and item bias tables, whose step ``bias_lr_scale`` scales."""


def key_learning_rate(optimizer, key):
    """Step size of the parameter ``key``: the bias tables' may be scaled.

    Parameters
    ----------
    optimizer : SGD or Adamax
        Optimizer.
    key : str
        Parameter name.

    Returns
    -------
    float
        ``learning_rate * bias_lr_scale`` for ``bu`` and ``bi``,
        ``learning_rate`` for every other parameter.
    """
    if key in BIAS_KEYS:
        return optimizer.learning_rate * optimizer.bias_lr_scale
    return optimizer.learning_rate


class SGD:
    """Plain stochastic gradient descent: ``W -= learning_rate * dW``.

    Parameters
    ----------
    learning_rate : float, default=0.01
        Step size (Keras's SGD default).
    bias_lr_scale : float, default=1.0
        The bias tables ``bu`` and ``bi`` step with
        ``learning_rate * bias_lr_scale``; 1 is Keras's single rate.
    """

    name = "sgd"

    def __init__(self, learning_rate=0.01, bias_lr_scale=1.0):
        self.learning_rate = learning_rate
        self.bias_lr_scale = bias_lr_scale
        self.iterations = 0

    def step(self, params, grads):
        """Update every parameter in place.

        Parameters
        ----------
        params : dict of str to ndarray
            Parameters, updated in place.
        grads : dict of str to ndarray
            Gradients keyed like ``params``.
        """
        for key, W in params.items():
            lr = W.dtype.type(key_learning_rate(self, key))
            # W <- W - lr dW
            W -= lr * grads[key]  # same shape as W
        self.iterations += 1

    def state(self):
        """Return the optimizer state as a dict of arrays (for checkpoints).

        Returns
        -------
        dict of str to ndarray
            ``iterations``.
        """
        return {"iterations": np.array(self.iterations, dtype=np.int64)}

    def load_state(self, state):
        """Restore a state returned by :meth:`state`.

        Parameters
        ----------
        state : dict of str to ndarray
            Saved state.
        """
        self.iterations = int(state["iterations"])


class Adamax:
    """Adamax exactly as Keras defines it.

    Parameters
    ----------
    learning_rate : float, default=0.001
        Step size.
    beta_1 : float, default=0.9
        Decay of the first moment ``m``.
    beta_2 : float, default=0.999
        Decay of the infinity norm ``v``.
    epsilon : float, default=1e-7
        Added to ``v`` before dividing.
    bias_lr_scale : float, default=1.0
        The bias tables ``bu`` and ``bi`` step with
        ``learning_rate * bias_lr_scale``; 1 is Keras's single rate.

    Notes
    -----
    With ``t`` the 1-based step count, kept across epochs::

        m <- m + (1 - beta_1) (dW - m)
        v <- max(beta_2 v, |dW|)
        W <- W - learning_rate m / ((1 - beta_1 ** t) (v + epsilon))

    The bias correction applies to ``m`` only, and ``epsilon`` is added to
    ``v`` without a square root (Keras ``optimizers/adamax.py``;
    ``KERAS_SEMANTICS.md`` section 4). Every row of every table moves each
    step, because the whole-table L2 makes every gradient dense.

    References
    ----------
    D. P. Kingma and J. Ba, "Adam: A Method for Stochastic Optimization",
    ICLR 2015, section 7.1.
    """

    name = "adamax"

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        bias_lr_scale=1.0,
    ):
        self.learning_rate = learning_rate
        self.bias_lr_scale = bias_lr_scale
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.iterations = 0
        self.m = {}
        self.v = {}

    def step(self, params, grads):
        """Update every parameter in place.

        Parameters
        ----------
        params : dict of str to ndarray
            Parameters, updated in place.
        grads : dict of str to ndarray
            Gradients keyed like ``params``.
        """
        t = self.iterations + 1
        for key, W in params.items():
            dW = grads[key]
            f = W.dtype.type
            if key not in self.m:
                self.m[key] = np.zeros_like(W)
                self.v[key] = np.zeros_like(W)
            m, v = self.m[key], self.v[key]
            # two scratch arrays shaped like W, shared by all keys
            tmp1, tmp2 = self._scratch(W)

            # first moment: m <- m + (1 - beta_1)(dW - m)
            np.subtract(dW, m, out=tmp1)
            tmp1 *= f(1.0 - self.beta_1)
            m += tmp1  # same shape as W

            # infinity norm: v <- max(beta_2 v, |dW|)
            np.multiply(v, f(self.beta_2), out=tmp1)
            np.abs(dW, out=tmp2)
            np.maximum(tmp1, tmp2, out=v)  # same shape as W

            # step with bias correction on m only
            # NOTE: (lr m) / ((1 - beta_1^t)(v + eps)) in this order rounds
            # exactly like keras/src/optimizers/adamax.py in float32
            beta_1_power = f(self.beta_1) ** f(t)
            np.multiply(m, f(key_learning_rate(self, key)), out=tmp1)
            np.add(v, f(self.epsilon), out=tmp2)
            tmp2 *= f(1.0) - beta_1_power
            tmp1 /= tmp2
            W -= tmp1  # same shape as W
        self.iterations = t

    def _scratch(self, W):
        """Two scratch arrays shaped like ``W``, views of one shared buffer."""
        size = W.size
        buf = getattr(self, "_buf", None)
        if buf is None or buf.size < 2 * size or buf.dtype != W.dtype:
            buf = self._buf = np.empty(2 * size, dtype=W.dtype)
        return buf[:size].reshape(W.shape), buf[size : 2 * size].reshape(W.shape)

    def state(self):
        """Return the optimizer state as a dict of arrays (for checkpoints).

        Returns
        -------
        dict of str to ndarray
            ``iterations`` and the moments, keyed ``m/<key>`` and ``v/<key>``.
        """
        out = {"iterations": np.array(self.iterations, dtype=np.int64)}
        out.update({f"m/{key}": m for key, m in self.m.items()})
        out.update({f"v/{key}": v for key, v in self.v.items()})
        return out

    def load_state(self, state):
        """Restore a state returned by :meth:`state`.

        Parameters
        ----------
        state : dict of str to ndarray
            Saved state.
        """
        self.iterations = int(state["iterations"])
        self.m = {k[2:]: np.array(a) for k, a in state.items() if k.startswith("m/")}
        self.v = {k[2:]: np.array(a) for k, a in state.items() if k.startswith("v/")}


def make_optimizer(name, learning_rate=None, bias_lr_scale=1.0):
    """Build an optimizer by name.

    Parameters
    ----------
    name : {"sgd", "adamax"}
        Optimizer name.
    learning_rate : float, optional
        Step size; the optimizer's Keras default when None (0.01 for SGD,
        0.001 for Adamax).
    bias_lr_scale : float, default=1.0
        Factor on the step size of the bias tables ``bu`` and ``bi``.

    Returns
    -------
    SGD or Adamax
        A fresh optimizer.

    Raises
    ------
    ValueError
        If the name is unknown, or the learning rate or the bias factor is
        not a finite number > 0.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if learning_rate is not None and not (
        learning_rate > 0 and np.isfinite(learning_rate)
    ):
        raise ValueError(
            f"learning_rate must be a finite number > 0, got {learning_rate!r}"
        )
    if not (bias_lr_scale > 0 and np.isfinite(bias_lr_scale)):
        raise ValueError(
            f"bias_lr_scale must be a finite number > 0, got {bias_lr_scale!r}"
        )
    cls = SGD if name == "sgd" else Adamax
    opt = cls() if learning_rate is None else cls(learning_rate=learning_rate)
    opt.bias_lr_scale = float(bias_lr_scale)
    return opt


PENALTIES = ("table", "rows")


class L2Penalty:
    """L2 regularisation of a model: the tutorial's or per-rating.

    Parameters
    ----------
    l2 : float, default=0.01
        Weight on the factor tables ``P`` and ``Q`` (and on the bias tables
        when ``l2_bias`` is None).
    penalty : {"table", "rows"}, default="table"
        ``"table"``: ``l2 * sum(W ** 2)`` over the whole of each table, once
        per step (the tutorial under Keras). ``"rows"``: only the batch's
        rows, once per rating, averaged over the batch (Funk SVD's
        per-rating regularisation).
    l2_bias : float or None, default=None
        Weight on ``bu`` and ``bi``; ``l2`` when None.
    l2_dense : float, default=0.0
        Weight on the dense kernels ``W1, W2, ...`` (whole arrays, once per
        step; biases of dense layers are never penalised).

    Notes
    -----
    With ``c`` the weight of each table (``l2`` or ``l2_bias``) and ``batch``
    the batch size, the ``"rows"`` penalty and its gradient are::

        penalty = (1 / batch) sum_b [ c_P |P[u_b]|^2 + c_Q |Q[i_b]|^2
                                      + c_bu bu[u_b]^2 + c_bi bi[i_b]^2 ]
        dP[j]   = (2 c_P / batch) * count_j * P[j]

    where ``count_j`` is how often row ``j`` occurs in the batch. With the
    MSE loss and ``learning_rate = lr``, one SGD step moves a row like a
    per-rating Funk SVD step of size ``2 lr / batch``.
    """

    def __init__(self, l2=0.01, penalty="table", l2_bias=None, l2_dense=0.0):
        self.l2 = l2
        self.penalty = penalty
        self.l2_bias = l2_bias
        self.l2_dense = l2_dense

    @property
    def weights(self):
        """Weight of each embedding table, by key."""
        c_bias = self.l2 if self.l2_bias is None else self.l2_bias
        return {"P": self.l2, "Q": self.l2, "bu": c_bias, "bi": c_bias}

    @property
    def is_tutorial(self):
        """True when this is the plain whole-table penalty of one weight."""
        return (
            self.penalty == "table"
            and self.l2_dense == 0
            and self.l2_bias in (None, self.l2)
        )

    def _dense_keys(self, params):
        return [k for k in params if k.startswith("W")]

    def value(self, params, u, i):
        """Penalty at the current weights for a batch.

        Parameters
        ----------
        params : dict of str to ndarray
            Parameters.
        u, i : ndarray of shape (batch,)
            The batch's user and item rows.

        Returns
        -------
        float
            The penalty added to the batch loss.
        """
        total = 0.0
        weights = {key: c for key, c in self.weights.items() if c != 0}
        if self.penalty == "table":
            for key, c in weights.items():
                total += c * float(np.sum(params[key] * params[key]))
        else:
            batch = len(u)
            for key, c in weights.items():
                rows = params[key][u if key in ("P", "bu") else i]  # (batch, k)
                total += c * float(np.sum(rows * rows)) / batch
        for key in self._dense_keys(params) if self.l2_dense else ():
            total += self.l2_dense * float(np.sum(params[key] * params[key]))
        return total

    def add_grads(self, grads, params, u, i):
        """Add the penalty's gradient to ``grads`` in place.

        Parameters
        ----------
        grads : dict of str to ndarray
            Gradients of the data loss, keyed like ``params``.
        params : dict of str to ndarray
            Parameters.
        u, i : ndarray of shape (batch,)
            The batch's user and item rows.

        Returns
        -------
        grads : dict of str to ndarray
            The same dict.
        """
        batch = len(u)
        for key, c in self.weights.items():
            if c == 0:
                continue
            W = params[key]
            f = W.dtype.type
            if self.penalty == "table":
                # d (c W^2) / dW = 2 c W, on every row
                grads[key] += f(2.0 * c) * W  # (n_rows, k)
                continue
            # d (c / batch) sum_b W[idx_b]^2 / dW[j] = (2 c / batch) count_j W[j]
            idx = u if key in ("P", "bu") else i
            rows, count = np.unique(idx, return_counts=True)  # (n_distinct,)
            scale = f(2.0 * c / batch) * count.astype(W.dtype)  # (n_distinct,)
            # rows are distinct, so fancy-index += adds each exactly once
            grads[key][rows] += scale.reshape((-1,) + (1,) * (W.ndim - 1)) * W[rows]
        for key in self._dense_keys(params) if self.l2_dense else ():
            W = params[key]
            # d (l2_dense W^2) / dW = 2 l2_dense W
            grads[key] += W.dtype.type(2.0 * self.l2_dense) * W  # (in, out)
        return grads
