"""The tutorial's matrix-factorisation model: embedding dot product plus biases.

``r_hat = P[u] . Q[i] + bu[u] + bi[i]``, trained on ``r = rating - mu``.
Functions appear in the order init, forward, backward.
"""

import numpy as np

from npmf.layers import embedding_backward, embedding_forward

EMBEDDING_INIT_LIMIT = 0.05
"""Keras's ``"uniform"`` embedding initialiser draws from [-0.05, 0.05)."""


def init_embeddings(n_users, n_items, n_factors, rng, dtype=np.float32, init_std=None):
    """Draw the four embedding tables like Keras's Embedding layer.

    Parameters
    ----------
    n_users : int
        Number of user rows.
    n_items : int
        Number of item rows.
    n_factors : int
        Embedding size ``k``.
    rng : numpy.random.Generator
        Source of randomness.
    dtype : numpy dtype, default=np.float32
        Parameter dtype.
    init_std : float or None, default=None
        When given, draw from a normal distribution with this standard
        deviation instead.

    Returns
    -------
    params : dict of str to ndarray
        ``P (n_users, k)``, ``Q (n_items, k)``, ``bu (n_users,)``,
        ``bi (n_items,)``, each uniform on [-0.05, 0.05) (or normal).

    Notes
    -----
    NOTE: the distribution is Keras's ``RandomUniform(-0.05, 0.05)``, but the
    draws come from NumPy, not TensorFlow's Philox generator, so the values
    differ from a Keras model built with the same seed. Parity tests copy
    weights instead.
    """
    lim = EMBEDDING_INIT_LIMIT

    def draw(shape):
        if init_std is not None:
            return rng.normal(0.0, init_std, size=shape).astype(dtype)
        return rng.uniform(-lim, lim, size=shape).astype(dtype)

    return {
        "P": draw((n_users, n_factors)),  # (n_users, k)
        "Q": draw((n_items, n_factors)),  # (n_items, k)
        "bu": draw((n_users,)),  # (n_users,)
        "bi": draw((n_items,)),  # (n_items,)
    }


def init_params(n_users, n_items, n_factors, rng, dtype=np.float32, init_std=None):
    """Initialise the MF parameters.

    Parameters
    ----------
    n_users : int
        Number of user rows.
    n_items : int
        Number of item rows.
    n_factors : int
        Embedding size ``k``.
    rng : numpy.random.Generator
        Source of randomness.
    dtype : numpy dtype, default=np.float32
        Parameter dtype.
    init_std : float or None, default=None
        Normal initialisation with this standard deviation; Keras's uniform
        when None.

    Returns
    -------
    params : dict of str to ndarray
        ``P``, ``Q``, ``bu``, ``bi``; see :func:`init_embeddings`.
    """
    return init_embeddings(n_users, n_items, n_factors, rng, dtype, init_std)


def forward(params, u, i):
    """Predict centred ratings for a batch of (user, item) index pairs.

    Parameters
    ----------
    params : dict of str to ndarray
        ``P (n_users, k)``, ``Q (n_items, k)``, ``bu (n_users,)``,
        ``bi (n_items,)``.
    u : ndarray of shape (batch,)
        User indices.
    i : ndarray of shape (batch,)
        Item indices.

    Returns
    -------
    r_hat : ndarray of shape (batch,)
        ``P[u] . Q[i] + bu[u] + bi[i]``.
    cache : tuple
        What :func:`backward` needs.
    """
    # look up embeddings
    pu = embedding_forward(params["P"], u)  # (batch, k)
    qi = embedding_forward(params["Q"], i)  # (batch, k)
    bu_u = embedding_forward(params["bu"], u)  # (batch,)
    bi_i = embedding_forward(params["bi"], i)  # (batch,)

    # dot product plus biases
    r_hat = np.einsum("bk,bk->b", pu, qi) + bu_u + bi_i  # (batch,)

    cache = (u, i, pu, qi)
    return r_hat, cache


def backward(params, cache, dr_hat):
    """Gradients of the loss with respect to every parameter.

    Parameters
    ----------
    params : dict of str to ndarray
        Parameters used in the forward pass.
    cache : tuple
        Second output of :func:`forward`.
    dr_hat : ndarray of shape (batch,)
        Gradient of the loss with respect to ``r_hat``.

    Returns
    -------
    grads : dict of str to ndarray
        ``dP``, ``dQ``, ``dbu``, ``dbi`` keyed ``P``, ``Q``, ``bu``, ``bi``,
        each the shape of its parameter. Only the data loss is included; the
        L2 penalty's gradient is added by :func:`npmf.optim.add_l2_grads`.

    Notes
    -----
    With ``r_hat_b = P[u_b] . Q[i_b] + bu[u_b] + bi[i_b]``::

        d r_hat_b / d P[u_b] = Q[i_b]      d r_hat_b / d bu[u_b] = 1
        d r_hat_b / d Q[i_b] = P[u_b]      d r_hat_b / d bi[i_b] = 1

    Each row's gradient is the sum over the batch entries that use it.
    """
    u, i, pu, qi = cache
    n_users, n_items = params["P"].shape[0], params["Q"].shape[0]

    # d r_hat / d P[u] = Q[i] ; d r_hat / d Q[i] = P[u]
    dpu = dr_hat[:, None] * qi  # (batch, k)
    dqi = dr_hat[:, None] * pu  # (batch, k)

    # scatter rows back into the tables; repeated ids accumulate
    grads = {
        "P": embedding_backward(dpu, u, n_users),  # (n_users, k)
        "Q": embedding_backward(dqi, i, n_items),  # (n_items, k)
        "bu": embedding_backward(dr_hat, u, n_users),  # (n_users,)
        "bi": embedding_backward(dr_hat, i, n_items),  # (n_items,)
    }
    return grads
