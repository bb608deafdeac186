"""Math cores of the npmf models.

Each model module exposes the same pure functions: ``init_params``,
``forward(params, u, i) -> (r_hat, cache)`` and
``backward(params, cache, dr_hat) -> grads``. They hold no state; the
estimators in :mod:`npmf.estimator` wrap them.

Glossary
--------
The names below are used in every math function of the package.

==============  ===================================  ==========================
name            meaning                              shape
==============  ===================================  ==========================
``batch``       batch size                           dim
``k``, ``h``    embedding size, hidden width         dims
``n_users``     number of distinct users             dim
``n_items``     number of distinct items             dim
``u``, ``i``    user / item indices of a batch       ``(batch,)``
``P``           user factor table                    ``(n_users, k)``
``Q``           item factor table                    ``(n_items, k)``
``bu``, ``bi``  user / item biases                   ``(n_users,)``,
                                                     ``(n_items,)``
``mu``          mean training rating                 scalar
``r``           target ``rating - mu``               ``(batch,)``
``r_hat``       prediction                           ``(batch,)``
``e``           residual ``r_hat - r``               ``(batch,)``
``x``           ``P[u]``, ``Q[i]``, ``bu[u]``,       ``(batch, 2k + 2)``
                ``bi[i]`` side by side
``W1``, ``b1``  weights and bias of dense layer 1    ``(in, out)``, ``(out,)``
``z1``, ``a1``  pre-activation, activation           ``(batch, out)``
``a_in``, ``z`` input and pre-activation of a        ``(batch, in)``,
                generic dense layer (``layers.py``)  ``(batch, out)``
==============  ===================================  ==========================

A gradient is ``d`` plus the name (``dP``, ``dbu``, ``dW1``, ``dr_hat``):
always the derivative of the scalar loss, always the shape of the array it is
named after.
"""

EMBEDDING_KEYS = ("P", "Q", "bu", "bi")
"""Keys of the four embedding tables, the ones the L2 penalty covers."""
