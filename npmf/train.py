"""The minibatch training loop, shared by every model and optimizer.

The trainer sees a model only through its ``forward`` and ``backward``
functions and its ``params`` dict, and an optimizer only through ``step``.
"""

import contextlib
import logging
import math
import time

import numpy as np

from npmf.fast import ENGINES, select_engine
from npmf.fast.predict import predict_deep
from npmf.losses import get_loss
from npmf.metrics import rmse
from npmf.optim import L2Penalty

logger = logging.getLogger(__name__)


class TrainingDivergedError(FloatingPointError):
    """Raised when a loss or weight becomes non-finite during training."""


def train_step(model, params, optimizer, u, i, r, loss_fn, l2):
    """Run one forward pass, backward pass and optimizer step on a batch.

    Parameters
    ----------
    model : module
        Model math core with ``forward`` and ``backward``.
    params : dict of str to ndarray
        Parameters, updated in place.
    optimizer : SGD or Adamax
        Optimizer.
    u : ndarray of shape (batch,)
        User indices.
    i : ndarray of shape (batch,)
        Item indices.
    r : ndarray of shape (batch,)
        Centred targets ``rating - mu``.
    loss_fn : callable
        ``f(r_hat, r) -> (loss, dr_hat)``.
    l2 : float or L2Penalty
        Whole-table penalty weight on the embedding tables, or a penalty
        object (per-rating rows, separate bias or dense weights).

    Returns
    -------
    loss : float
        Batch data loss plus the penalty, both at the pre-update weights
        (what Keras logs for the step).
    """
    # forward pass and data loss
    r_hat, cache = model.forward(params, u, i)  # (batch,)
    data_loss, dr_hat = loss_fn(r_hat, r)  # scalar, (batch,)

    # penalty at the pre-update weights
    pen = as_penalty(l2)
    penalty = pen.value(params, u, i)

    # backward pass: data loss, then the penalty's gradient (2 l2 W)
    grads = model.backward(params, cache, dr_hat)
    pen.add_grads(grads, params, u, i)

    optimizer.step(params, grads)
    return data_loss + penalty


def as_penalty(l2):
    """Return ``l2`` as an :class:`~npmf.optim.L2Penalty`.

    Parameters
    ----------
    l2 : float or L2Penalty
        A whole-table weight or a penalty object.

    Returns
    -------
    L2Penalty
        ``L2Penalty(l2)`` for a number, ``l2`` itself otherwise.
    """
    return l2 if isinstance(l2, L2Penalty) else L2Penalty(l2)


def batches(n, batch_size):
    """Yield ``(start, stop)`` of consecutive batches; the last may be short.

    Parameters
    ----------
    n : int
        Number of samples.
    batch_size : int
        Batch size.

    Yields
    ------
    tuple of int
        Slice bounds.
    """
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def run_epoch(
    model,
    params,
    optimizer,
    u,
    i,
    r,
    *,
    batch_size,
    loss_fn,
    l2,
    order=None,
    epoch=1,
    progress=None,
    engine="auto",
):
    """Train for one epoch over the samples in ``order``.

    Parameters
    ----------
    model : module
        Model math core.
    params : dict of str to ndarray
        Parameters, updated in place.
    optimizer : SGD or Adamax
        Optimizer.
    u, i : ndarray of shape (n,)
        User and item indices.
    r : ndarray of shape (n,)
        Centred targets.
    batch_size : int
        Batch size; the last partial batch is kept.
    loss_fn : callable
        Loss function.
    l2 : float or L2Penalty
        Whole-table penalty weight, or a penalty object.
    order : ndarray of shape (n_train,), optional
        Samples to train on, in this order: a permutation of ``range(n)``,
        or a part of one (a partial epoch); every sample in array order
        when None.
    epoch : int, default=1
        Epoch number, for error messages.
    progress : callable, optional
        Called with the size of each finished batch (a tqdm ``update``).
    engine : {"auto", "fast", "reference"}, default="auto"
        ``"reference"`` runs :func:`train_step` batch by batch; ``"fast"``
        runs the exact fast path of :mod:`npmf.fast` and raises if this model
        and optimizer have none; ``"auto"`` takes the fast path where it
        exists.

    Returns
    -------
    loss : float
        Mean of the batch losses weighted by batch size (Keras's ``loss``).

    Raises
    ------
    TrainingDivergedError
        At the first non-finite batch loss, naming epoch, batch, optimizer
        and learning rate.
    ValueError
        If ``engine`` is unknown, or ``"fast"`` for a combination without a
        fast path.

    Notes
    -----
    Both engines give the same parameters, optimizer state and loss to
    float32 rounding (``tests/test_fast.py``); the reference stays the
    plain statement of the algorithm that the fast path is checked against.
    The fast path covers the whole-table and the per-rating ("rows")
    penalties, a separate ``l2_bias`` and ``l2_dense``, under SGD and
    Adamax, except SGD with a whole-table penalty whose bias tables have
    their own ``l2_bias`` or step size (:func:`npmf.fast.select_engine`).
    """
    # NOTE: the fast path covers every penalty but one: SGD with a
    # whole-table penalty whose bias tables decay at another rate than the
    # factor tables (see select_engine)
    pen = as_penalty(l2)
    n = len(r) if order is None else len(order)
    # NOTE: fast kernels keep buffers for their largest batch, which is never
    # larger than the epoch
    largest = max(min(batch_size, n), 1)
    fast_engine = _select_engine(engine, model, params, optimizer, largest, pen)

    def on_batch(b, loss, size):
        # stop at the first non-finite loss, naming where it happened
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"loss became {loss} at epoch {epoch}, batch {b} with optimizer "
                f"{optimizer.name} and learning_rate {optimizer.learning_rate}; "
                f"lower learning_rate"
            )
        if progress is not None:
            progress(size)

    if fast_engine is not None:
        return fast_engine.run_epoch(
            params,
            optimizer,
            u,
            i,
            r,
            order=order,
            batch_size=batch_size,
            loss_fn=loss_fn,
            on_batch=on_batch,
        )

    # reference path: one train_step per batch
    total = 0.0
    for b, (start, stop) in enumerate(batches(n, batch_size), start=1):
        sel = slice(start, stop) if order is None else order[start:stop]
        loss = train_step(model, params, optimizer, u[sel], i[sel], r[sel], loss_fn, l2)
        on_batch(b, loss, stop - start)
        total += loss * (stop - start)
    return total / n


def _select_engine(engine, model, params, optimizer, batch_size, penalty):
    """Return the fast engine to use, or None for the reference path."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "reference":
        return None
    fast_engine = select_engine(model, params, optimizer, batch_size, penalty)
    if fast_engine is None and engine == "fast":
        raise ValueError(
            f"engine='fast' has no exact fast path for model {model!r} with "
            f"optimizer {type(optimizer).__name__} and penalty "
            f"{penalty.penalty!r} (l2={penalty.l2}, l2_bias={penalty.l2_bias}, "
            f"l2_dense={penalty.l2_dense}); use engine='auto' or 'reference'"
        )
    return fast_engine


def permutation(rng, n):
    """Draw ``rng.permutation(n)`` as int32 when ``n`` fits.

    Parameters
    ----------
    rng : numpy.random.Generator
        Generator.
    n : int
        Number of samples.

    Returns
    -------
    ndarray of shape (n,)
        The permutation ``rng.permutation(n)`` would return, with the same
        generator state afterwards.

    Notes
    -----
    NOTE: ``Generator.shuffle`` draws the same swaps whatever the item size,
    so shuffling an int32 ``arange`` gives ``rng.permutation(n)`` at half the
    memory (200 MB less on 25M ratings); ``tests/test_train.py`` pins it.
    """
    if n >= 2**31:
        return rng.permutation(n)
    order = np.arange(n, dtype=np.int32)  # (n,)
    rng.shuffle(order)
    return order


def predict_batches(model, params, u, i, batch_size=8192):
    """Predict centred ratings in batches.

    Parameters
    ----------
    model : module
        Model math core.
    params : dict of str to ndarray
        Parameters.
    u, i : ndarray of shape (n,)
        User and item indices.
    batch_size : int, default=8192
        Rows per forward pass (bounds the memory of the deep model).

    Returns
    -------
    r_hat : ndarray of shape (n,)
        Predictions.

    Notes
    -----
    NOTE: a deep model with a non-linear activation, asked for more
    ratings than it has users and items (the per-epoch training RMSE),
    takes its first layer from per-id tables
    (:func:`npmf.fast.predict.predict_deep`): equal to the forward pass to
    float32 rounding, with about 60 times fewer first-layer multiply-adds on
    an ml-100k fold.
    """
    # a non-linear deep model: first layer once per user and per item
    out = predict_deep(model, params, u, i, batch_size)
    if out is not None:
        return out

    out = np.empty(len(u), dtype=np.float32)  # (n,)
    predict = getattr(model, "predict", None)
    for start, stop in batches(len(u), batch_size):
        if predict is not None:
            # a cache-free prediction where the core has one (deep model)
            out[start:stop] = predict(params, u[start:stop], i[start:stop])
        else:
            out[start:stop], _ = model.forward(params, u[start:stop], i[start:stop])
    return out


def keras_eval_loss(model, params, u, i, r, *, batch_size, loss_fn, l2):
    """Compute the validation loss the way Keras's ``evaluate`` logs it.

    Parameters
    ----------
    model : module
        Model math core.
    params : dict of str to ndarray
        Parameters.
    u, i : ndarray of shape (n,)
        User and item indices.
    r : ndarray of shape (n,)
        Centred targets.
    batch_size : int
        Evaluation batch size (Keras uses the training batch size).
    loss_fn : callable
        Loss function.
    l2 : float or L2Penalty
        Whole-table penalty weight, or a penalty object.

    Returns
    -------
    float
        ``sum_v B_v (loss_v + penalty) / n``: per-batch loss, weighted by
        batch size, plus the penalty at the current weights.
    """
    pen = as_penalty(l2)
    total = 0.0
    for start, stop in batches(len(r), batch_size):
        bu, bi = u[start:stop], i[start:stop]
        r_hat = predict_batches(model, params, bu, bi)
        loss, _ = loss_fn(r_hat, r[start:stop])
        total += (loss + pen.value(params, bu, bi)) * (stop - start)
    return total / len(r)


def check_finite_params(params, epoch):
    """Raise when any parameter holds NaN or inf.

    Parameters
    ----------
    params : dict of str to ndarray
        Parameters.
    epoch : int
        Epoch number, for the message.

    Raises
    ------
    TrainingDivergedError
        Naming the first non-finite parameter.
    """
    for key, W in params.items():
        if not np.all(np.isfinite(W)):
            raise TrainingDivergedError(
                f"parameter {key} became non-finite at epoch {epoch}; "
                f"lower learning_rate"
            )


# NOTE: overflow on the way to a non-finite loss is reported once, as
# TrainingDivergedError, not as a stream of NumPy RuntimeWarnings
@np.errstate(over="ignore", invalid="ignore")
def fit_loop(
    model,
    params,
    optimizer,
    train,
    *,
    n_epochs,
    batch_size,
    loss,
    l2,
    rng,
    validation=None,
    start_epoch=1,
    on_epoch_end=None,
    progress=False,
    engine="auto",
):
    """Train for several epochs and return the history.

    Parameters
    ----------
    model : module
        Model math core.
    params : dict of str to ndarray
        Parameters, updated in place.
    optimizer : SGD or Adamax
        Optimizer.
    train : tuple of ndarray
        ``(u, i, r)``: indices and centred targets, each of shape (n,).
    n_epochs : int
        Last epoch to run (epochs ``start_epoch..n_epochs``).
    batch_size : int
        Batch size.
    loss : {"rmse", "mse"}
        Loss name.
    l2 : float or L2Penalty
        Whole-table penalty weight, or a penalty object.
    rng : numpy.random.Generator
        Draws one permutation of the training samples per epoch.
    validation : tuple of ndarray, optional
        ``(u, i, r)`` evaluated after every epoch.
    start_epoch : int, default=1
        First epoch number (above 1 when resuming).
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(record)`` after every epoch; returning
        True ends training after that epoch.
    progress : bool, default=False
        Show a tqdm bar per epoch.
    engine : {"auto", "fast", "reference"}, default="auto"
        Training engine; see :func:`run_epoch`.

    Returns
    -------
    history : list of dict
        One record per epoch: ``epoch``, ``loss`` (batch-size-weighted mean
        of batch loss plus penalty, as Keras logs it), ``rmse`` (whole
        training set, at the end-of-epoch weights), ``val_loss`` (Keras's
        batched validation loss with penalty) and ``val_rmse`` (whole
        validation set) when validating, and ``seconds``.
    """
    u, i, r = train
    loss_fn = get_loss(loss)
    history = []
    for epoch in range(start_epoch, n_epochs + 1):
        t0 = time.perf_counter()
        order = permutation(rng, len(r))  # (n,)
        bar = _progress_bar(len(r), epoch, n_epochs) if progress else None
        closing = contextlib.nullcontext() if bar is None else contextlib.closing(bar)
        with closing:
            epoch_loss = run_epoch(
                model,
                params,
                optimizer,
                u,
                i,
                r,
                batch_size=batch_size,
                loss_fn=loss_fn,
                l2=l2,
                order=order,
                epoch=epoch,
                progress=None if bar is None else bar.update,
                engine=engine,
            )
        check_finite_params(params, epoch)
        seconds = time.perf_counter() - t0

        record = {"epoch": epoch, "loss": epoch_loss}
        record["rmse"] = rmse(predict_batches(model, params, u, i), r)
        if validation is not None:
            vu, vi, vr = validation
            record["val_loss"] = keras_eval_loss(
                model, params, vu, vi, vr, batch_size=batch_size, loss_fn=loss_fn, l2=l2
            )
            record["val_rmse"] = rmse(predict_batches(model, params, vu, vi), vr)
        record["seconds"] = seconds
        history.append(record)
        logger.info("epoch %d/%d %s", epoch, n_epochs, record)
        if on_epoch_end is not None and on_epoch_end(record) is True:
            # the callback asked to stop (early stopping)
            break
    return history


def _progress_bar(total, epoch, n_epochs):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=f"epoch {epoch}/{n_epochs}",
        unit="rating",
        leave=False,
        mininterval=0.5,
    )
