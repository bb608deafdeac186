"""The tutorial's deep model: concatenated embeddings through dense layers.

``x = [P[u], Q[i], bu[u], bi[i]]`` goes through hidden dense layers with one
activation, then a linear dense layer of width 1 gives ``r_hat``; it is
trained on ``r = rating - mu``. Functions appear in the order init, forward,
backward; :func:`make` binds an activation into the ``forward`` /
``backward`` pair the trainer calls.
"""

import numpy as np

from npmf.layers import (
    ACTIVATIONS,
    dense_backward,
    dense_forward,
    embedding_backward,
    embedding_forward,
    glorot_uniform,
)
from npmf.models.mf import init_embeddings


def n_dense_layers(params):
    """Count the dense layers of a parameter dict.

    Parameters
    ----------
    params : dict of str to ndarray
        Deep-model parameters with kernels ``W1``, ``W2``, ...

    Returns
    -------
    int
        Number of kernels, hidden layers plus the output layer.
    """
    n = 0
    while f"W{n + 1}" in params:
        n += 1
    return n


def init_params(
    n_users, n_items, n_factors, hidden, rng, dtype=np.float32, init_std=None
):
    """Initialise the deep model like Keras's default initialisers.

    Parameters
    ----------
    n_users : int
        Number of user rows.
    n_items : int
        Number of item rows.
    n_factors : int
        Embedding size ``k``.
    hidden : sequence of int
        Hidden widths, for example ``(2048, 256)``.
    rng : numpy.random.Generator
        Source of randomness (``rng.uniform``, and ``rng.normal`` with
        ``init_std``).
    dtype : numpy dtype, default=np.float32
        Parameter dtype.
    init_std : float or None, default=None
        Normal embedding initialisation with this standard deviation;
        Keras's uniform when None.

    Returns
    -------
    params : dict of str to ndarray
        ``P``, ``Q``, ``bu``, ``bi`` from :func:`npmf.models.mf.init_embeddings`;
        then per dense layer ``l = 1 .. len(hidden) + 1`` a kernel ``Wl`` of
        shape ``(in, out)`` (``glorot_uniform``) and a bias ``bl`` of shape
        ``(out,)`` (zeros). Layer 1 reads ``2k + 2`` columns; the last layer
        has one output.
    """
    # embedding tables, drawn first
    params = init_embeddings(n_users, n_items, n_factors, rng, dtype, init_std)

    # dense layers: (2k + 2) -> hidden[0] -> ... -> 1
    widths = (2 * n_factors + 2, *hidden, 1)
    for layer, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        params[f"W{layer}"] = glorot_uniform(fan_in, fan_out, rng, dtype)  # (in, out)
        params[f"b{layer}"] = np.zeros(fan_out, dtype=dtype)  # (out,)
    return params


def forward(params, u, i, activation="linear"):
    """Predict centred ratings for a batch of (user, item) index pairs.

    Parameters
    ----------
    params : dict of str to ndarray
        See :func:`init_params`.
    u : ndarray of shape (batch,)
        User indices.
    i : ndarray of shape (batch,)
        Item indices.
    activation : {"linear", "relu", "sigmoid", "tanh"}, default="linear"
        Activation of the hidden layers; the output layer is always linear.

    Returns
    -------
    r_hat : ndarray of shape (batch,)
        Predicted centred ratings.
    cache : tuple
        ``(u, i, inputs)``: ``inputs[l - 1]`` is the input of dense layer
        ``l`` (``x``, then ``a1``, ``a2``, ...).

    Notes
    -----
    For the tutorial's two hidden layers, with ``f`` the activation::

        x     = [P[u], Q[i], bu[u], bi[i]]        (batch, 2k + 2)
        a1    = f(z1),  z1 = x  @ W1 + b1          (batch, h1)
        a2    = f(z2),  z2 = a1 @ W2 + b2          (batch, h2)
        r_hat = z3[:, 0],  z3 = a2 @ W3 + b3       (batch,)

    The output layer is linear whatever ``f`` is: the Keras twin ends in
    ``Activation('linear')`` (``KERAS_SEMANTICS.md`` section 1), and a relu
    or sigmoid output could not reach the negative centred ratings.

    NOTE: with ``f`` linear (the tutorial's setting) the whole network is
    affine in ``x``, so ``r_hat = g(u) + h(i)``: a bias-only model with no
    user-item interaction, however wide the layers.
    """
    act = ACTIVATIONS[activation]
    n_layers = n_dense_layers(params)

    # look up embeddings and place them side by side
    pu = embedding_forward(params["P"], u)  # (batch, k)
    qi = embedding_forward(params["Q"], i)  # (batch, k)
    bu_u = embedding_forward(params["bu"], u)  # (batch,)
    bi_i = embedding_forward(params["bi"], i)  # (batch,)
    columns = [pu, qi, bu_u[:, None], bi_i[:, None]]
    x = np.concatenate(columns, axis=1)  # (batch, 2k + 2)

    # hidden layers: a = f(a_in @ W + b)
    inputs = [x]
    for layer in range(1, n_layers):
        W, b = params[f"W{layer}"], params[f"b{layer}"]
        z = dense_forward(inputs[-1], W, b)  # (batch, h)
        inputs.append(act.forward(z))  # (batch, h)

    # linear output layer of width 1
    W, b = params[f"W{n_layers}"], params[f"b{n_layers}"]
    z_out = dense_forward(inputs[-1], W, b)  # (batch, 1)
    r_hat = z_out[:, 0]  # (batch,)

    cache = (u, i, inputs)
    return r_hat, cache


def backward(params, cache, dr_hat, activation="linear"):
    """Gradients of the loss with respect to every parameter.

    Parameters
    ----------
    params : dict of str to ndarray
        Parameters used in the forward pass.
    cache : tuple
        Second output of :func:`forward`.
    dr_hat : ndarray of shape (batch,)
        Gradient of the loss with respect to ``r_hat``.
    activation : {"linear", "relu", "sigmoid", "tanh"}, default="linear"
        The activation the forward pass used.

    Returns
    -------
    grads : dict of str to ndarray
        One gradient per key of ``params``, each of its shape. Only the data
        loss is included; the L2 penalty's gradient is added by
        :func:`npmf.optim.add_l2_grads`.

    Notes
    -----
    Walking the forward steps in reverse, with ``f'`` written through the
    activation output (see :mod:`npmf.layers`)::

        dz3 = dr_hat[:, None]
        dW3 = a2.T @ dz3    db3 = sum_b dz3    da2 = dz3 @ W3.T
        dz2 = da2 * f'(a2)
        dW2 = a1.T @ dz2    db2 = sum_b dz2    da1 = dz2 @ W2.T
        dz1 = da1 * f'(a1)
        dW1 = x.T @ dz1     db1 = sum_b dz1    dx  = dz1 @ W1.T

    ``dx`` splits by column into ``dP[u]`` (first ``k``), ``dQ[i]`` (next
    ``k``), ``dbu[u]`` and ``dbi[i]`` (last two), which are scattered into the
    tables; rows used several times in the batch accumulate.
    """
    u, i, inputs = cache
    act = ACTIVATIONS[activation]
    n_layers = len(inputs)
    k = params["P"].shape[1]
    grads = {}

    # output layer: d r_hat / d z_out = 1
    dz = dr_hat[:, None]  # (batch, 1)

    # dense layers in reverse: dW = a_in.T dz, db = sum dz, da_in = dz W.T
    for layer in range(n_layers, 0, -1):
        a_in = inputs[layer - 1]
        da_in, grads[f"W{layer}"], grads[f"b{layer}"] = dense_backward(
            dz, a_in, params[f"W{layer}"]
        )  # (batch, in), (in, out), (out,)
        if layer > 1:
            # hidden activation: dz = da * f'(z), from a = f(z)
            dz = act.backward(da_in, a_in)  # (batch, h)
    dx = da_in  # (batch, 2k + 2)

    # split dx by column; the slices are views, not copies
    dpu, dqi = dx[:, :k], dx[:, k : 2 * k]  # (batch, k), (batch, k)
    dbu_u, dbi_i = dx[:, 2 * k], dx[:, 2 * k + 1]  # (batch,), (batch,)

    # scatter rows back into the tables; repeated ids accumulate
    n_users, n_items = params["P"].shape[0], params["Q"].shape[0]
    grads["P"] = embedding_backward(dpu, u, n_users)  # (n_users, k)
    grads["Q"] = embedding_backward(dqi, i, n_items)  # (n_items, k)
    grads["bu"] = embedding_backward(dbu_u, u, n_users)  # (n_users,)
    grads["bi"] = embedding_backward(dbi_i, i, n_items)  # (n_items,)
    assert all(grads[key].shape == W.shape for key, W in params.items())
    return grads


class MLPCore:
    """The deep model's ``forward`` / ``backward`` with the activation bound.

    Parameters
    ----------
    activation : {"linear", "relu", "sigmoid", "tanh"}, default="linear"
        Activation of the hidden layers.

    Notes
    -----
    Holds no state besides the activation name, so ``forward`` and
    ``backward`` stay pure; this is what the trainer receives as ``model``.
    """

    def __init__(self, activation="linear"):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}"
            )
        self.activation = activation

    def __repr__(self):
        return f"MLPCore(activation={self.activation!r})"

    def predict(self, params, u, i):
        """Predict without a cache; contracted when every layer is linear.

        Parameters
        ----------
        params : dict of str to ndarray
            Parameters.
        u : ndarray of shape (batch,)
            User indices.
        i : ndarray of shape (batch,)
            Item indices.

        Returns
        -------
        r_hat : ndarray of shape (batch,)
            Predicted centred ratings, equal to ``forward``'s to float32
            rounding.

        Notes
        -----
        With linear activations the network is affine in ``x``:
        ``r_hat = x . w + c`` with ``w = W1 W2 ... WL`` (a vector, the last
        layer having one unit) and ``c = sum_l bl W(l+1) ... WL``. Since ``x``
        is ``[P[u], Q[i], bu[u], bi[i]]``, that is ``g[u] + h[i] + c`` with
        ``g = P w_P + bu w_bu`` over users and ``h = Q w_Q + bi w_bi`` over
        items: two matrix-vector products instead of a pass of the whole
        batch through every layer.
        """
        if self.activation != "linear":
            r_hat, _ = self.forward(params, u, i)
            return r_hat

        # contract the dense chain from the output back: w = W1 ... WL
        n_layers = n_dense_layers(params)
        w = params[f"W{n_layers}"][:, 0]  # (h,)
        c = params[f"b{n_layers}"][0]
        for layer in range(n_layers - 1, 0, -1):
            c = c + params[f"b{layer}"] @ w
            w = params[f"W{layer}"] @ w  # (in,)

        # split w over the input columns [P[u], Q[i], bu[u], bi[i]]
        k = params["P"].shape[1]
        g = params["P"] @ w[:k] + params["bu"] * w[2 * k]  # (n_users,)
        h = params["Q"] @ w[k : 2 * k] + params["bi"] * w[2 * k + 1]  # (n_items,)
        return g[u] + h[i] + c  # (batch,)

    def forward(self, params, u, i):
        """Run :func:`forward` with the bound activation.

        Parameters
        ----------
        params : dict of str to ndarray
            Parameters.
        u : ndarray of shape (batch,)
            User indices.
        i : ndarray of shape (batch,)
            Item indices.

        Returns
        -------
        r_hat : ndarray of shape (batch,)
            Predicted centred ratings.
        cache : tuple
            What :meth:`backward` needs.
        """
        return forward(params, u, i, self.activation)

    def backward(self, params, cache, dr_hat):
        """Run :func:`backward` with the bound activation.

        Parameters
        ----------
        params : dict of str to ndarray
            Parameters used in the forward pass.
        cache : tuple
            Second output of :meth:`forward`.
        dr_hat : ndarray of shape (batch,)
            Gradient of the loss with respect to ``r_hat``.

        Returns
        -------
        grads : dict of str to ndarray
            Gradients of the data loss keyed like ``params``.
        """
        return backward(params, cache, dr_hat, self.activation)


def make(activation="linear"):
    """Bind an activation into a model core for the trainer.

    Parameters
    ----------
    activation : {"linear", "relu", "sigmoid", "tanh"}, default="linear"
        Activation of the hidden layers.

    Returns
    -------
    MLPCore
        Object with ``forward(params, u, i)`` and
        ``backward(params, cache, dr_hat)``.

    Raises
    ------
    ValueError
        If the activation is unknown.
    """
    return MLPCore(activation)
