"""Fast training path: the reference trainer's epoch, reorganised for speed.

:func:`npmf.train.run_epoch` calls :func:`select_engine`; when it returns an
engine, that engine runs the epoch instead of the step-by-step reference
loop (:func:`npmf.train.train_step`). Each engine produces the reference's
parameters, optimizer state and logged loss to float32 rounding; what makes
it fast is exact algebra, not approximation:

- the batches' id layout (distinct rows, scatter positions) is computed
  once per chunk of batches, vectorised (:mod:`npmf.fast.batching`);
- embedding gradients are summed into the distinct rows with a C
  scatter-add instead of ``np.add.at`` on a full-size zero table;
- under SGD the whole-table L2 shrink of every row is one scalar applied
  lazily, and ``sum(W ** 2)`` is updated from the rows that moved
  (:class:`npmf.fast.engines.SGDEngine`);
- with linear activations the deep model's dense chain is contracted into
  matrix-vector products; its weight gradients are rank one
  (:class:`npmf.fast.kernels.DeepLinearKernel`);
- Adamax, dense by definition, updates in place block by block
  (:class:`npmf.fast.engines.AdamaxEngine`).

Tolerance: ``tests/test_fast.py`` checks parameters against the reference
path after several steps with rtol 1e-4 (atol 1e-6) and the logged epoch
loss with rtol 1e-5.
"""

import numpy as np

from npmf.fast.engines import AdamaxEngine, SGDEngine
from npmf.fast.kernels import DeepBatchedKernel, DeepLinearKernel, MFKernel
from npmf.models import EMBEDDING_KEYS, mf
from npmf.optim import SGD, Adamax

ENGINES = ("auto", "fast", "reference")
"""Values of the trainer's ``engine`` argument."""


def _kernel(model, params, batch_size):
    """Return the fast kernel for ``model``, or None when there is none."""
    if model is mf and set(params) == set(EMBEDDING_KEYS):
        return MFKernel(params, batch_size)
    # NOTE: imported here so the fast path never depends on the deep model
    # being importable when only MF is trained
    from npmf.models import mlp

    if isinstance(model, mlp.MLPCore) and "W1" in params:
        if model.activation == "linear":
            return DeepLinearKernel(params, batch_size)
        return DeepBatchedKernel(params, batch_size, model.activation)
    return None


def select_engine(model, params, optimizer, batch_size):
    """Return a fast engine for this model and optimizer, or None.

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

    Returns
    -------
    SGDEngine or AdamaxEngine or None
        None when the combination has no exact fast path: another model
        core, an optimizer subclass, or parameters that are not C-contiguous
        float32 arrays.
    """
    if not all(
        isinstance(W, np.ndarray) and W.dtype == np.float32 and W.flags.c_contiguous
        for W in params.values()
    ):
        return None
    kernel = _kernel(model, params, batch_size)
    if kernel is None:
        return None
    if type(optimizer) is SGD:
        return SGDEngine(kernel)
    if type(optimizer) is Adamax:
        return AdamaxEngine(kernel)
    return None
