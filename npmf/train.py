"""The minibatch training loop, shared by every model and optimizer.

The trainer sees a model only through its ``forward`` and ``backward``
functions and its ``params`` dict, and an optimizer only through ``step``.
"""

import logging
import time

import numpy as np

from npmf.losses import get_loss
from npmf.metrics import rmse
from npmf.optim import add_l2_grads, l2_penalty

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
    l2 : float
        Whole-table penalty weight on the embedding tables.

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
    penalty = l2_penalty(params, l2)

    # backward pass: data loss, then d penalty = 2 l2 W
    grads = model.backward(params, cache, dr_hat)
    add_l2_grads(grads, params, l2)

    optimizer.step(params, grads)
    return data_loss + penalty


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


def run_epoch(model, params, optimizer, u, i, r, *, batch_size, loss_fn, l2,
              order=None, epoch=1, progress=None):
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
    l2 : float
        Penalty weight.
    order : ndarray of shape (n,), optional
        Permutation of the samples; array order when None.
    epoch : int, default=1
        Epoch number, for error messages.
    progress : callable, optional
        Called with the size of each finished batch (a tqdm ``update``).

    Returns
    -------
    loss : float
        Mean of the batch losses weighted by batch size (Keras's ``loss``).

    Raises
    ------
    TrainingDivergedError
        At the first non-finite batch loss, naming epoch, batch, optimizer
        and learning rate.
    """
    n = len(r)
    total = 0.0
    for b, (start, stop) in enumerate(batches(n, batch_size), start=1):
        sel = slice(start, stop) if order is None else order[start:stop]
        loss = train_step(model, params, optimizer, u[sel], i[sel], r[sel], loss_fn, l2)
        if not np.isfinite(loss):
            raise TrainingDivergedError(
                f"loss became {loss} at epoch {epoch}, batch {b} with optimizer "
                f"{optimizer.name} and learning_rate {optimizer.learning_rate}; "
                f"lower learning_rate"
            )
        total += loss * (stop - start)
        if progress is not None:
            progress(stop - start)
    return total / n


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
    """
    out = np.empty(len(u), dtype=np.float32)  # (n,)
    for start, stop in batches(len(u), batch_size):
        out[start:stop], _ = model.forward(params, u[start:stop], i[start:stop])
    return out


def keras_eval_loss(model, params, u, i, r, *, batch_size, loss_fn, l2):
    """Validation loss the way Keras's ``evaluate`` logs it.

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
    l2 : float
        Penalty weight.

    Returns
    -------
    float
        ``sum_v B_v (loss_v + penalty) / n``: per-batch loss, weighted by
        batch size, plus the penalty at the current weights.
    """
    penalty = l2_penalty(params, l2)
    total = 0.0
    for start, stop in batches(len(r), batch_size):
        r_hat, _ = model.forward(params, u[start:stop], i[start:stop])
        loss, _ = loss_fn(r_hat, r[start:stop])
        total += (loss + penalty) * (stop - start)
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


def fit_loop(model, params, optimizer, train, *, n_epochs, batch_size, loss, l2,
             rng, validation=None, start_epoch=1, on_epoch_end=None, progress=False):
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
    l2 : float
        Whole-table penalty weight.
    rng : numpy.random.Generator
        Draws one permutation of the training samples per epoch.
    validation : tuple of ndarray, optional
        ``(u, i, r)`` evaluated after every epoch.
    start_epoch : int, default=1
        First epoch number (above 1 when resuming).
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(record)`` after every epoch.
    progress : bool, default=False
        Show a tqdm bar per epoch.

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
        order = rng.permutation(len(r))  # (n,)
        bar = _progress_bar(len(r), epoch, n_epochs) if progress else None
        try:
            epoch_loss = run_epoch(
                model, params, optimizer, u, i, r, batch_size=batch_size,
                loss_fn=loss_fn, l2=l2, order=order, epoch=epoch,
                progress=None if bar is None else bar.update,
            )
        finally:
            if bar is not None:
                bar.close()
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
        if on_epoch_end is not None:
            on_epoch_end(record)
    return history


def _progress_bar(total, epoch, n_epochs):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch}/{n_epochs}", unit="rating",
                leave=False, mininterval=0.5)
