"""Math cores of the npmf models.

Each model module exposes the same pure functions: ``init_params``,
``forward(params, u, i) -> (r_hat, cache)`` and
``backward(params, cache, dr_hat) -> grads``. They hold no state; the
estimators in :mod:`npmf.estimator` wrap them.

Glossary
--------
The names below are used in every math function of the package.

=========================  ============================================  =====================
name                       meaning                                        shape
=========================  ============================================  =====================
``batch``, ``k``, ``h``    batch size, embedding size, hidden width       dims
``n_users``, ``n_items``   number of distinct users / items               dims
``u``, ``i``               user / item indices of a batch                 ``(batch,)``
``P``, ``Q``               user / item factor tables                      ``(n_users, k)``,
                                                                          ``(n_items, k)``
``bu``, ``bi``             user / item biases                             ``(n_users,)``,
                                                                          ``(n_items,)``
``mu``                     global mean of the training ratings            scalar
``r``, ``r_hat``, ``e``    target (rating - mu), prediction, residual     ``(batch,)``
                           ``r_hat - r``
``x``                      dense input: ``P[u]``, ``Q[i]``, ``bu[u]``,    ``(batch, 2k + 2)``
                           ``bi[i]`` side by side
``W1``, ``b1``             weights and bias of dense layer 1              ``(in, out)``,
                                                                          ``(out,)``
``z1``, ``a1``             pre-activation and activation of layer 1       ``(batch, out)``
``a_in``, ``z``            input and pre-activation of a generic dense    ``(batch, in)``,
                           layer (layer-generic code in ``layers.py``)    ``(batch, out)``
=========================  ============================================  =====================

A gradient is ``d`` plus the name (``dP``, ``dbu``, ``dW1``, ``dr_hat``):
always the derivative of the scalar loss, always the shape of the array it is
named after.
"""

EMBEDDING_KEYS = ("P", "Q", "bu", "bi")
"""Keys of the four embedding tables, the ones the L2 penalty covers."""
