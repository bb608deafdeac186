"""Fast training path: the reference trainer's epoch, reorganised for speed.

:func:`npmf.train.run_epoch` calls :func:`select_engine`; when it returns an
engine, that engine runs the epoch instead of the step-by-step reference
loop (:func:`npmf.train.train_step`). Each engine produces the reference's
parameters and optimizer state to float32 rounding, and its logged loss too
but for the one NOTE below; what makes it fast is exact algebra, not
approximation:

- the batches' id layout (distinct rows, scatter positions) is computed
  once per chunk of batches, vectorised (:mod:`npmf.fast.batching`);
- embedding gradients are summed into the distinct rows with a C
  scatter-add instead of ``np.add.at`` on a full-size zero table;
- under SGD the whole-table L2 shrink of every row is one scalar applied
  lazily, and ``sum(W ** 2)`` is updated from the rows that moved
  (:class:`npmf.fast.engines.SGDEngine`);
- the tutorial's MF under SGD skips the distinct-row layout: each sample's
  gradient is scattered straight into its rows, about 15 NumPy calls a step
  (:class:`npmf.fast.engines.MFSGDEngine`);
- the deep model with a non-linear activation computes its first layer once
  per distinct user and item, into buffers kept for the epoch
  (:class:`npmf.fast.kernels.DeepBatchedKernel`);
- with linear activations the deep model's dense chain is contracted into
  matrix-vector products; its weight gradients are rank one
  (:class:`npmf.fast.kernels.DeepLinearKernel`);
- Adamax, dense by definition, updates in place block by block
  (:class:`npmf.fast.engines.AdamaxEngine`);
- the per-rating ("rows") L2 penalty is summed into the kernels' row
  gradients, per sample or as ``count_j W[j]`` per distinct row, and never
  touches a row outside the batch (:mod:`npmf.fast.kernels`);
- whole-set predictions of a non-linear deep model (the per-epoch training
  RMSE) take the first layer from per-user and per-item tables
  (:mod:`npmf.fast.predict`).

Penalties (:class:`npmf.optim.L2Penalty`): the whole-table penalty, the rows
penalty (any ``l2`` and ``l2_bias``) and ``l2_dense`` on the dense kernels,
under SGD and Adamax, for every kernel. One combination stays on the
reference path, see :func:`select_engine`.

Tolerance: ``tests/test_fast.py`` checks parameters against the reference
path after several steps with rtol 1e-4 (atol 1e-6) and the logged epoch
loss with rtol 1e-5.

NOTE: one logged value is not exact algebra. ``MFSGDEngine`` shares the
second-order part of the change of ``sum(W ** 2)`` among the steps of a
segment instead of computing it per step; its parameters are exact, and its
logged loss differs from the exact running sum by 1.2e-7 of its value on the
first tutorial epoch of ml-100k, up to 1.4e-3 on a toy problem at rate 2.0
where every row repeats in every batch (``tests/test_fast.py``).
"""

import numpy as np

from npmf.fast.engines import AdamaxEngine, MFSGDEngine, SGDEngine
from npmf.fast.kernels import DeepBatchedKernel, DeepLinearKernel, MFKernel
from npmf.models import EMBEDDING_KEYS, mf
from npmf.optim import SGD, Adamax, L2Penalty

ENGINES = ("auto", "fast", "reference")
"""Values of the trainer's ``engine`` argument."""


def _kernel(model, params, batch_size, rows):
    """Return the fast kernel for ``model``, or None when there is none."""
    if model is mf and set(params) == set(EMBEDDING_KEYS):
        return MFKernel(params, batch_size, rows)
    # NOTE: imported here so the fast path never depends on the deep model
    # being importable when only MF is trained
    from npmf.models import mlp

    if isinstance(model, mlp.MLPCore) and "W1" in params:
        if model.activation == "linear":
            return DeepLinearKernel(params, batch_size, rows)
        return DeepBatchedKernel(params, batch_size, model.activation, rows)
    return None


def select_engine(model, params, optimizer, batch_size, penalty=0.01):
    """Return a fast engine for this model, optimizer and penalty, or None.

    Parameters
    ----------
    model : object
        The model core the trainer was given.
    params : dict of str to ndarray
        Parameters.
    optimizer : SGD or Adamax
        Optimizer.
    batch_size : int
        Batch size.
    penalty : float or L2Penalty, default=0.01
        The penalty; a number is the tutorial's whole-table weight.

    Returns
    -------
    MFSGDEngine or SGDEngine or AdamaxEngine or None
        :class:`npmf.fast.engines.MFSGDEngine` for MF under SGD with the
        whole-table penalty or none. None when the combination has no exact
        fast path: another model core, an optimizer subclass, parameters
        that are not C-contiguous float32 arrays, or SGD with a whole-table
        penalty whose bias weight or bias step size (``bias_lr_scale``)
        differs from the factor tables'.

    Notes
    -----
    NOTE: under SGD the whole-table penalty is one lazy scale shared by the
    four tables (:class:`npmf.fast.engines.SGDEngine`), which needs one
    decay ``1 - 2 lr l2`` for all of them; a separate ``l2_bias`` or bias
    step size would need a second scale threaded through every kernel's
    forward and backward, so those combinations (used by no preset) train on
    the reference path.
    """
    if not isinstance(penalty, L2Penalty):
        penalty = L2Penalty(penalty)
    if not all(
        isinstance(W, np.ndarray) and W.dtype == np.float32 and W.flags.c_contiguous
        for W in params.values()
    ):
        return None
    rows = penalty.weights if penalty.penalty == "rows" else None
    # one lazy scale for the four tables needs one decay 1 - 2 lr l2 for all
    split_table = penalty.penalty == "table" and (
        penalty.l2_bias not in (None, penalty.l2)
        or (penalty.l2 and getattr(optimizer, "bias_lr_scale", 1.0) != 1.0)
    )
    if type(optimizer) is SGD and not split_table:
        if model is mf and set(params) == set(EMBEDDING_KEYS) and rows is None:
            # the tutorial's case: per-sample scatter, no row layout
            return MFSGDEngine(batch_size, penalty, params["P"].shape[1])
        engine = SGDEngine
    elif type(optimizer) is Adamax:
        engine = AdamaxEngine
    else:
        return None
    kernel = _kernel(model, params, batch_size, rows)
    return None if kernel is None else engine(kernel, penalty)
