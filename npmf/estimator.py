"""Estimators: the scikit-learn-style face of the math cores.

``__init__`` stores hyperparameters unchanged; ``fit`` validates, trains and
returns ``self``; learned state ends in ``_``; ``predict`` refuses to run
before ``fit``. Every model shares this class's data handling, so the
trainer, the CLI, saving and evaluation treat them alike.
"""

import collections
import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np

from npmf.ids import IdMap, check_indices
from npmf.io import load_checkpoint, save_checkpoint
from npmf.losses import LOSSES
from npmf.metrics import mae, rmse
from npmf.models import mf, mlp
from npmf.optim import OPTIMIZERS, PENALTIES, L2Penalty, make_optimizer
from npmf.train import fit_loop, predict_batches

logger = logging.getLogger(__name__)


class NotFittedError(ValueError, AttributeError):
    """Raised when ``predict`` or ``save`` is called before ``fit``."""


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_nonneg_float(name, value, strict=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (np.isfinite(value) and (value > 0 if strict else value >= 0)):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _check_positive_float(name, value):
    _check_nonneg_float(name, value, strict=True)


def _mean_weights(snapshots):
    """Element-wise mean of parameter dicts, summed in float64, cast back.

    One float64 accumulator per parameter, not a stack of all snapshots.
    """
    snapshots = list(snapshots)
    out = {}
    for key, W in snapshots[-1].items():
        total = W.astype(np.float64)  # same shape as W
        for snap in snapshots[:-1]:
            total += snap[key]
        total /= len(snapshots)
        out[key] = total.astype(W.dtype)
    return out


def split_pairs(X, name="X"):
    """Split a table of (user, item) raw ids into two 1-D arrays.

    Parameters
    ----------
    X : array-like of shape (n, 2) or DataFrame with columns user, item
        Raw id pairs.
    name : str, default="X"
        Argument name, for error messages.

    Returns
    -------
    users, items : ndarray of shape (n,)
        Raw ids.

    Raises
    ------
    ValueError
        If ``X`` is not two columns wide.
    """
    if hasattr(X, "columns") and {"user", "item"} <= set(X.columns):
        return X["user"].to_numpy(), X["item"].to_numpy()
    arr = np.asarray(X)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(
            f"{name} must have shape (n, 2) with user and item ids, got {arr.shape}"
        )
    return arr[:, 0], arr[:, 1]


def check_target(y, n, name="y"):
    """Return ``y`` as float64 of shape (n,), refusing any other shape.

    Parameters
    ----------
    y : array-like
        Ratings.
    n : int
        Number of (user, item) pairs they belong to.
    name : str, default="y"
        Argument name, for error messages.

    Returns
    -------
    ndarray of shape (n,)
        Ratings as float64.

    Raises
    ------
    ValueError
        If the shape is not ``(n,)`` or a rating is not finite. A target of
        shape ``(n, 1)`` or ``(n, 4)`` would otherwise broadcast against the
        predictions into an ``(n, n)`` loss.
    """
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(
            f"{name} must have shape ({n},), one rating per (user, item) pair, "
            f"got shape {y.shape}"
        )
    try:
        y = y.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must hold numbers, got dtype {y.dtype}") from err
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise ValueError(
            f"{name} must be finite, got {y[bad[0]]} at position {bad[0]} "
            f"({bad.size} non-finite)"
        )
    return y


class RatingModel:
    """Shared ``fit``/``predict`` logic; subclasses name their math core.

    Subclasses define ``model_name``, ``_core()`` returning an object with
    ``forward`` and ``backward``, ``_init_params(n_users, n_items, rng)``
    and ``_check_hyperparameters()``.
    """

    model_name = None

    def get_params(self):
        """Return the hyperparameters as a dict (scikit-learn's contract).

        Returns
        -------
        dict
            Constructor arguments by name.
        """
        return {key: getattr(self, key) for key in self._param_names}

    def _check_common(self):
        for key in ("n_factors", "n_epochs", "batch_size"):
            _check_positive_int(key, getattr(self, key))
        _check_nonneg_float("l2", self.l2)
        if self.learning_rate is not None:
            _check_positive_float("learning_rate", self.learning_rate)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.penalty not in PENALTIES:
            raise ValueError(
                f"penalty must be one of {PENALTIES}, got {self.penalty!r}"
            )
        if self.l2_bias is not None:
            _check_nonneg_float("l2_bias", self.l2_bias)
        _check_positive_float("lr_decay", self.lr_decay)
        if not self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        _check_positive_float("bias_lr_scale", self.bias_lr_scale)
        if self.init_std is not None:
            _check_nonneg_float("init_std", self.init_std)
        if self.validation_fraction is not None:
            _check_nonneg_float("validation_fraction", self.validation_fraction)
            if not 0 < self.validation_fraction < 1:
                raise ValueError(
                    f"validation_fraction must be in (0, 1) or None, "
                    f"got {self.validation_fraction}"
                )
        _check_positive_int("patience", self.patience)
        _check_positive_int("average_epochs", self.average_epochs)
        if self.refit and not self.validation_fraction:
            raise ValueError(
                "refit retrains for the epoch count early stopping found, so it "
                "needs validation_fraction"
            )
        if self.seed is not None and (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, (int, np.integer))
            or self.seed < 0
        ):
            raise ValueError(f"seed must be None or an integer >= 0, got {self.seed!r}")

    def fit(
        self,
        X,
        y,
        *,
        validation_data=None,
        user_ids=None,
        item_ids=None,
        progress=False,
        on_epoch_end=None,
        checkpoint=None,
        resume=False,
    ):
        """Train on rated (user, item) pairs.

        Parameters
        ----------
        X : array-like of shape (n, 2) or DataFrame with user, item columns
            Raw user and item ids of the training ratings.
        y : array-like of shape (n,)
            Ratings.
        validation_data : tuple (X_val, y_val), optional
            Evaluated after each epoch; rows whose ids have no table row are
            left out of it with a warning.
        user_ids, item_ids : array-like, optional
            Every id the tables should hold (the tutorial sizes them from
            the whole ratings file, test rows included). Defaults to the
            ids in ``X``.
        progress : bool, default=False
            Show a tqdm bar per epoch.
        on_epoch_end : callable, optional
            Called with each epoch's history record.
        checkpoint : str or Path, optional
            File rewritten (atomically) after every epoch with everything
            needed to continue: parameters, optimizer state, generator state
            and history.
        resume : bool, default=False
            Continue from ``checkpoint`` when it exists. The checkpoint must
            come from the same hyperparameters and training data.

        Returns
        -------
        self
            The fitted estimator.

        Raises
        ------
        ValueError
            For bad hyperparameters, a target not of shape (n,), or a
            checkpoint that does not match this run.
        npmf.train.TrainingDivergedError
            When a loss or weight becomes non-finite; the estimator is then
            left unfitted.
        """
        self._check_hyperparameters()
        users, items = split_pairs(X)
        y = check_target(y, len(users))
        if len(y) == 0:
            raise ValueError("fit needs at least one rating, got 0")

        # id maps over every known id; tables get one row per distinct id
        self.user_map_ = IdMap.from_values(users if user_ids is None else user_ids)
        self.item_map_ = IdMap.from_values(items if item_ids is None else item_ids)
        u = self.user_map_.to_index(users).astype(np.int32)  # (n,)
        i = self.item_map_.to_index(items).astype(np.int32)  # (n,)
        n_users, n_items = len(self.user_map_), len(self.item_map_)

        # centre the targets on the training mean
        self.mu_ = float(np.mean(y))
        r = (y - self.mu_).astype(np.float32)  # (n,)

        rng = np.random.default_rng(self.seed)
        self.user_seen_ = np.bincount(u, minlength=n_users) > 0  # (n_users,)
        self.item_seen_ = np.bincount(i, minlength=n_items) > 0  # (n_items,)
        self.train_pairs_ = np.stack([u, i], axis=1)  # (n, 2)
        self.rating_range_ = (float(np.min(y)), float(np.max(y)))

        val = None
        if validation_data is not None:
            val = self._validation_indices(*validation_data)

        # early stopping watches a slice carved from the training ratings
        stop_set, fit_rows = None, slice(None)
        if checkpoint is not None and self.average_epochs > 1:
            raise ValueError("checkpoint cannot be combined with average_epochs > 1")
        if self.validation_fraction:
            if checkpoint is not None:
                raise ValueError(
                    "checkpoint cannot be combined with validation_fraction"
                )
            stop_rows, fit_rows = _carve(len(r), self.validation_fraction, rng)
            stop_set = (u[stop_rows], i[stop_rows], r[stop_rows])

        fingerprint = _fingerprint(u, i, y, self._run_settings())
        _check_memory(self, n_users, n_items)
        self.params_ = self._init_params(n_users, n_items, rng)
        try:
            self.history_, self.best_epoch_ = self._run(
                (u[fit_rows], i[fit_rows], r[fit_rows]),
                rng,
                self.n_epochs,
                val,
                stop_set,
                progress,
                on_epoch_end,
                checkpoint,
                resume,
                fingerprint,
            )
            if stop_set is not None and self.refit:
                # retrain from scratch on every training rating, as long as
                # early stopping found best
                rng = np.random.default_rng(self.seed)
                self.params_ = self._init_params(n_users, n_items, rng)
                self.history_, _ = self._run(
                    (u, i, r),
                    rng,
                    self.best_epoch_,
                    val,
                    None,
                    progress,
                    on_epoch_end,
                    None,
                    False,
                    fingerprint,
                )
        except BaseException:
            # no half-trained or NaN-filled model is left behind
            del self.params_
            raise
        return self

    def _run_settings(self):
        """Hyperparameters a checkpoint must share; n_epochs may grow."""
        return {k: v for k, v in self.get_params().items() if k != "n_epochs"}

    def _run(
        self,
        train,
        rng,
        n_epochs,
        val,
        stop_set,
        progress,
        on_epoch_end,
        checkpoint,
        resume,
        fingerprint,
    ):
        """Train ``self.params_`` for up to ``n_epochs``.

        Returns the history and the epoch whose weights were kept.
        """
        self.optimizer_ = make_optimizer(
            self.optimizer, self.learning_rate, self.bias_lr_scale
        )
        lr0 = self.optimizer_.learning_rate
        history, start_epoch = [], 1
        if checkpoint is not None and resume and Path(checkpoint).is_file():
            history = load_checkpoint(
                checkpoint,
                self,
                self.optimizer_,
                rng,
                fingerprint,
                settings=self._run_settings(),
            )
            start_epoch = len(history) + 1
            if len(history) > n_epochs:
                raise ValueError(
                    f"checkpoint {checkpoint} holds {len(history)} epochs, more "
                    f"than n_epochs={n_epochs}; ask for at least {len(history)}"
                )
            logger.info("resuming from %s after epoch %d", checkpoint, len(history))
        # exponential decay: epoch e runs at lr0 * lr_decay ** (e - 1)
        self.optimizer_.learning_rate = lr0 * self.lr_decay ** (start_epoch - 1)
        best = {"epoch": n_epochs, "rmse": np.inf, "params": None}
        # end-of-epoch weights of the last average_epochs epochs
        recent = collections.deque(maxlen=self.average_epochs)

        def epoch_done(record):
            history.append(record)
            epoch = record["epoch"]
            self.optimizer_.learning_rate = lr0 * self.lr_decay**epoch
            if self.average_epochs > 1:
                recent.append({k: W.copy() for k, W in self.params_.items()})
            stop = False
            if stop_set is not None:
                record["stop_rmse"] = self._clipped_rmse(*stop_set)
                if record["stop_rmse"] < best["rmse"]:
                    best.update(
                        epoch=epoch,
                        rmse=record["stop_rmse"],
                        params=_mean_weights(recent)
                        if recent
                        else {k: W.copy() for k, W in self.params_.items()},
                    )
                stop = epoch - best["epoch"] >= self.patience
            if checkpoint is not None:
                save_checkpoint(
                    checkpoint,
                    self.params_,
                    self.optimizer_,
                    rng,
                    history,
                    fingerprint,
                    settings=self._run_settings(),
                )
            if on_epoch_end is not None:
                on_epoch_end(record)
            return stop

        fit_loop(
            self._core(),
            self.params_,
            self.optimizer_,
            train,
            n_epochs=n_epochs,
            batch_size=self.batch_size,
            loss=self.loss,
            l2=self._penalty(),
            rng=rng,
            validation=val,
            on_epoch_end=epoch_done,
            progress=progress,
            start_epoch=start_epoch,
        )
        if best["params"] is None and recent:
            best["params"] = _mean_weights(recent)
        if best["params"] is not None:
            # restore the best epoch's weights, or the average kept
            for key, W in best["params"].items():
                self.params_[key][...] = W
        return history, best["epoch"]

    def _penalty(self):
        return L2Penalty(
            self.l2,
            penalty=self.penalty,
            l2_bias=self.l2_bias,
            l2_dense=getattr(self, "l2_dense", 0.0),
        )

    def _clipped_rmse(self, u, i, r):
        """Whole-set RMSE of centred targets, predictions clipped if asked."""
        r_hat = predict_batches(self._core(), self.params_, u, i).astype(np.float64)
        if self.clip:
            lo, hi = self.rating_range_
            r_hat = np.clip(r_hat, lo - self.mu_, hi - self.mu_)
        return rmse(r_hat, r)

    def _validation_indices(self, X_val, y_val):
        vu_raw, vi_raw = split_pairs(X_val, "validation X")
        vy = check_target(y_val, len(vu_raw), "validation y")
        vu = self.user_map_.to_index(vu_raw, missing=-1)
        vi = self.item_map_.to_index(vi_raw, missing=-1)
        keep = (vu >= 0) & (vi >= 0)
        if not keep.all():
            warnings.warn(
                f"{np.sum(~keep)} validation ratings have ids outside the tables "
                f"and are left out of val_loss and val_rmse",
                stacklevel=3,
            )
        if not keep.any():
            raise ValueError("no validation rating has both ids in the tables")
        vr = (vy[keep] - self.mu_).astype(np.float32)
        return vu[keep].astype(np.int32), vi[keep].astype(np.int32), vr

    def _check_fitted(self):
        if not hasattr(self, "params_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit first"
            )

    def predict_detail(self, X):
        """Predict ratings and say which ids the model knows.

        Parameters
        ----------
        X : array-like of shape (n, 2) or DataFrame with user, item columns
            Raw id pairs.

        Returns
        -------
        pred : ndarray of shape (n,)
            Predicted ratings (``mu`` added back).
        user_status, item_status : ndarray of str of shape (n,)
            ``"trained"`` (the id has training ratings), ``"untrained"``
            (it has a table row but no training rating: its row was only
            initialised and shrunk by the penalty) or ``"unknown"`` (no table
            row).

        Notes
        -----
        Both ids unknown give ``mu``; one unknown id gives the model's
        fallback (:meth:`_predict_one_side`). Rows with both ids in the tables
        use the model, as the tutorial's Keras model does.
        """
        self._check_fitted()
        users, items = split_pairs(X)
        u = self.user_map_.to_index(users, missing=-1)  # (n,)
        i = self.item_map_.to_index(items, missing=-1)  # (n,)
        ku, ki = u >= 0, i >= 0
        both = ku & ki

        pred = np.full(len(u), self.mu_, dtype=np.float64)  # (n,)
        if both.any():
            pred[both] += predict_batches(self._core(), self.params_, u[both], i[both])
        partial = ku ^ ki
        if partial.any():
            pred[partial] += self._predict_one_side(u[partial], i[partial])
        if self.clip:
            pred = np.clip(pred, *self.rating_range_)

        user_status = _status(u, self.user_seen_)
        item_status = _status(i, self.item_seen_)
        return pred, user_status, item_status

    def predict_indices(self, u, i):
        """Predict ratings for (user, item) row indices of the tables.

        Parameters
        ----------
        u : array-like of int of shape (n,)
            User rows, each in ``[0, n_users)``.
        i : array-like of int of shape (n,)
            Item rows, each in ``[0, n_items)``.

        Returns
        -------
        ndarray of shape (n,)
            Predicted ratings (``mu`` added back).

        Raises
        ------
        IndexError
            For an index outside its table, naming the index and the table
            size (NumPy would read ``-1`` as the last row).
        ValueError
            If ``u`` and ``i`` are not 1-D of the same length.
        """
        self._check_fitted()
        u = np.asarray(u)
        i = np.asarray(i)
        if u.ndim != 1 or u.shape != i.shape:
            raise ValueError(
                f"u and i must be 1-D of one length, got {u.shape} and {i.shape}"
            )
        for name, idx in (("u", u), ("i", i)):
            if idx.size and idx.dtype.kind not in "iu":
                raise TypeError(f"{name} must hold integers, got dtype {idx.dtype}")
        check_indices(u, len(self.user_map_), "u")
        check_indices(i, len(self.item_map_), "i")
        r_hat = predict_batches(
            self._core(), self.params_, u.astype(np.int32), i.astype(np.int32)
        )
        pred = self.mu_ + r_hat.astype(np.float64)
        return np.clip(pred, *self.rating_range_) if self.clip else pred

    def _predict_one_side(self, u, i):
        """Centred prediction when exactly one of ``u[b]``, ``i[b]`` is -1.

        Parameters
        ----------
        u, i : ndarray of int of shape (n,)
            Row indices, -1 for an unknown id.

        Returns
        -------
        ndarray of shape (n,)
            ``bu[u]`` for an unknown item, ``bi[i]`` for an unknown user: the
            MF's prediction with the unknown side's factors at zero.
        """
        out = np.where(u >= 0, self.params_["bu"][u], 0.0)  # (n,)
        return out + np.where(i >= 0, self.params_["bi"][i], 0.0)  # (n,)

    def predict(self, X):
        """Predict ratings for raw (user, item) id pairs.

        Parameters
        ----------
        X : array-like of shape (n, 2) or DataFrame with user, item columns
            Raw id pairs.

        Returns
        -------
        ndarray of shape (n,)
            Predicted ratings; see :meth:`predict_detail` for unknown ids.
        """
        pred, user_status, item_status = self.predict_detail(X)
        n_unknown = int(np.sum((user_status == "unknown") | (item_status == "unknown")))
        if n_unknown:
            warnings.warn(
                f"{n_unknown} of {len(pred)} pairs have a user or item unseen in "
                f"training; they get bias-only fallbacks",
                stacklevel=2,
            )
        return pred

    def evaluate(self, X, y):
        """Whole-set RMSE and MAE, over all rows and over known rows.

        Parameters
        ----------
        X : array-like of shape (n, 2) or DataFrame with user, item columns
            Raw id pairs.
        y : array-like of shape (n,)
            True ratings.

        Returns
        -------
        dict
            ``rmse``, ``mae`` and ``n`` over all rows; ``rmse_known``,
            ``mae_known`` and ``n_known`` over rows whose user and item both
            have training ratings (None when there are none);
            ``n_unknown_user``, ``n_unknown_item``, ``n_untrained``.
        """
        pred, user_status, item_status = self.predict_detail(X)
        y = check_target(y, len(pred))
        known = (user_status == "trained") & (item_status == "trained")
        out = {"rmse": rmse(pred, y), "mae": mae(pred, y), "n": len(y)}
        out["rmse_known"] = rmse(pred[known], y[known]) if known.any() else None
        out["mae_known"] = mae(pred[known], y[known]) if known.any() else None
        out["n_known"] = int(known.sum())
        out["n_unknown_user"] = int(np.sum(user_status == "unknown"))
        out["n_unknown_item"] = int(np.sum(item_status == "unknown"))
        out["n_untrained"] = int(
            np.sum((user_status == "untrained") | (item_status == "untrained"))
        )
        return out


def _check_memory(model, n_users, n_items):
    """Refuse tables that cannot fit in this machine's memory."""
    import os

    # NOTE: parameters, gradients, optimizer state and temporaries come to
    # about 16 times the float32 parameters (measured with SGD on MF)
    k = model.n_factors
    n_params = (n_users + n_items) * (k + 1)
    if hasattr(model, "hidden"):
        widths = (2 * k + 2,) + tuple(model.hidden) + (1,)
        n_params += sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))
    need = 16 * 4 * n_params
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise ValueError(
            f"n_factors={k} with {n_users} users and {n_items} items needs about "
            f"{need / 2**30:.1f} GiB to train, more than this machine's "
            f"{have / 2**30:.1f} GiB; use a smaller n_factors (or hidden widths)"
        )


def _carve(n, fraction, rng):
    """Split ``range(n)`` into a random slice of ``fraction`` and the rest."""
    n_stop = int(round(n * fraction))
    if n_stop < 1 or n_stop >= n:
        raise ValueError(
            f"validation_fraction={fraction} of {n} ratings leaves "
            f"{n_stop} for early stopping and {n - n_stop} for training; "
            f"both need at least one"
        )
    perm = rng.permutation(n)
    return np.sort(perm[:n_stop]), np.sort(perm[n_stop:])


def _fingerprint(u, i, r, hyperparameters):
    """Hash of the training data and hyperparameters, to match checkpoints."""
    h = hashlib.sha256()
    for arr in (u, i, r):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(repr(sorted(hyperparameters.items())).encode())
    return h.hexdigest()


def _status(idx, seen):
    status = np.full(len(idx), "unknown", dtype="<U9")  # (n,)
    known = idx >= 0
    status[known] = np.where(seen[idx[known]], "trained", "untrained")
    return status


class MFRegressor(RatingModel):
    """The tutorial's matrix factorisation, trained by minibatch SGD or Adamax.

    Parameters
    ----------
    n_factors : int, default=200
        Embedding size ``k``.
    n_epochs : int, default=60
        Training epochs.
    batch_size : int, default=256
        Ratings per step; the last partial batch is kept.
    learning_rate : float or None, default=None
        Step size; the optimizer's Keras default when None (SGD 0.01,
        Adamax 0.001).
    optimizer : {"sgd", "adamax"}, default="sgd"
        Optimizer.
    l2 : float, default=0.01
        Whole-table penalty weight on ``P``, ``Q``, ``bu`` and ``bi``.
    loss : {"rmse", "mse"}, default="rmse"
        Batch loss.
    seed : int or None, default=None
        Seed of the one generator behind initialisation and shuffling.
    penalty : {"table", "rows"}, default="table"
        ``"table"``: the tutorial's ``l2 * sum(W ** 2)`` over whole tables once
        per step; ``"rows"``: per-rating regularisation of the batch's rows
        (:class:`npmf.optim.L2Penalty`).
    l2_bias : float or None, default=None
        Penalty weight on ``bu`` and ``bi``; ``l2`` when None.
    lr_decay : float, default=1.0
        Epoch ``e`` runs at ``learning_rate * lr_decay ** (e - 1)``.
    bias_lr_scale : float, default=1.0
        The bias tables ``bu`` and ``bi`` step with ``bias_lr_scale`` times
        the learning rate (both optimizers).
    init_std : float or None, default=None
        Embeddings start normal with this standard deviation; uniform on
        [-0.05, 0.05) like Keras when None.
    validation_fraction : float or None, default=None
        Share of the training ratings held out for early stopping (never
        the test ratings); no early stopping when None.
    patience : int, default=4
        Early stopping ends training after this many epochs without a
        better held-out RMSE, and restores the best epoch's weights.
    refit : bool, default=False
        After early stopping, retrain from scratch on all training ratings
        for the best epoch count.
    clip : bool, default=False
        Clip predictions to the range of the training ratings.
    average_epochs : int, default=1
        Keep the mean of the weights at the end of the last
        ``average_epochs`` epochs of the final run (with early stopping and
        no refit: of the epochs ending at the best one) instead of the last
        epoch's weights alone; 1 keeps the last epoch's.

    Attributes
    ----------
    params_ : dict of str to ndarray
        ``P``, ``Q``, ``bu``, ``bi``.
    mu_ : float
        Mean training rating.
    user_map_, item_map_ : IdMap
        Raw id to row index.
    user_seen_, item_seen_ : ndarray of bool
        Which rows have training ratings.
    history_ : list of dict
        One record per epoch; see :func:`npmf.train.fit_loop`.
    best_epoch_ : int
        Epoch whose weights were kept (the last one without early stopping).
    rating_range_ : tuple of float
        Lowest and highest training rating (the clipping range).

    Notes
    -----
    ``r_hat = mu + P[u] . Q[i] + bu[u] + bi[i]``; the step loss is the batch
    RMSE of ``r_hat - rating`` plus ``l2 * sum(W ** 2)`` over the whole of each
    table, as the tutorial's Keras model computes it.
    """

    model_name = "mf"
    _param_names = (
        "n_factors",
        "n_epochs",
        "batch_size",
        "learning_rate",
        "optimizer",
        "l2",
        "loss",
        "seed",
        "penalty",
        "l2_bias",
        "lr_decay",
        "bias_lr_scale",
        "init_std",
        "validation_fraction",
        "patience",
        "refit",
        "clip",
        "average_epochs",
    )

    def __init__(
        self,
        n_factors=200,
        n_epochs=60,
        batch_size=256,
        learning_rate=None,
        optimizer="sgd",
        l2=0.01,
        loss="rmse",
        seed=None,
        penalty="table",
        l2_bias=None,
        lr_decay=1.0,
        bias_lr_scale=1.0,
        init_std=None,
        validation_fraction=None,
        patience=4,
        refit=False,
        clip=False,
        average_epochs=1,
    ):
        self.n_factors = n_factors
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.l2 = l2
        self.loss = loss
        self.seed = seed
        self.penalty = penalty
        self.l2_bias = l2_bias
        self.lr_decay = lr_decay
        self.bias_lr_scale = bias_lr_scale
        self.init_std = init_std
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.refit = refit
        self.clip = clip
        self.average_epochs = average_epochs

    def _check_hyperparameters(self):
        self._check_common()

    def _core(self):
        return mf

    def _init_params(self, n_users, n_items, rng):
        return mf.init_params(
            n_users, n_items, self.n_factors, rng, init_std=self.init_std
        )

    def layer_table(self, n_users, n_items):
        """Rows of a Keras-like summary: (layer, output shape, parameter count).

        Parameters
        ----------
        n_users, n_items : int
            Table sizes.

        Returns
        -------
        list of tuple
            One ``(name, output_shape, n_params)`` per layer.
        """
        k = self.n_factors
        return [
            ("user (Input)", "(None,)", 0),
            ("item (Input)", "(None,)", 0),
            ("P (Embedding)", f"(None, {k})", n_users * k),
            ("Q (Embedding)", f"(None, {k})", n_items * k),
            ("bu (Embedding)", "(None,)", n_users),
            ("bi (Embedding)", "(None,)", n_items),
            ("dot (P[u].Q[i])", "(None,)", 0),
            ("r_hat (Add)", "(None,)", 0),
        ]


def _check_hidden(hidden):
    """Check ``hidden`` is a non-empty list or tuple of integers >= 1."""
    if not isinstance(hidden, (list, tuple)):
        raise TypeError(
            f"hidden must be a list or tuple of layer widths like (2048, 256), "
            f"got {type(hidden).__name__} {hidden!r}"
        )
    if len(hidden) == 0:
        raise ValueError(
            "hidden must hold at least one layer width like (2048, 256), got ()"
        )
    for width in hidden:
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)):
            raise TypeError(
                f"hidden must hold integers, got {width!r} "
                f"({type(width).__name__}) in {hidden!r}"
            )
        if width < 1:
            raise ValueError(f"hidden widths must be >= 1, got {width} in {hidden!r}")


class DeepRegressor(RatingModel):
    """The tutorial's deep model: concatenated embeddings through dense layers.

    Parameters
    ----------
    n_factors : int, default=200
        Embedding size ``k``.
    hidden : tuple of int, default=(2048, 256)
        Widths of the hidden dense layers; a list is accepted too (a model
        file stores it as JSON).
    activation : {"linear", "relu", "sigmoid", "tanh"}, default="linear"
        Activation of every hidden layer; the output layer is linear.
    n_epochs : int, default=65
        Training epochs.
    batch_size : int, default=512
        Ratings per step; the last partial batch is kept.
    learning_rate : float or None, default=None
        Step size; the optimizer's Keras default when None (SGD 0.01,
        Adamax 0.001).
    optimizer : {"sgd", "adamax"}, default="sgd"
        Optimizer.
    l2 : float, default=0.01
        Whole-table penalty weight on ``P``, ``Q``, ``bu`` and ``bi``; the
        dense layers have none, as in the tutorial.
    loss : {"rmse", "mse"}, default="rmse"
        Batch loss.
    seed : int or None, default=None
        Seed of the one generator behind initialisation and shuffling.
    l2_dense : float, default=0.0
        Whole-array penalty weight on the dense kernels (not their biases).
    penalty : {"table", "rows"}, default="table"
        ``"table"``: the tutorial's ``l2 * sum(W ** 2)`` over whole tables once
        per step; ``"rows"``: per-rating regularisation of the batch's rows
        (:class:`npmf.optim.L2Penalty`).
    l2_bias : float or None, default=None
        Penalty weight on ``bu`` and ``bi``; ``l2`` when None.
    lr_decay : float, default=1.0
        Epoch ``e`` runs at ``learning_rate * lr_decay ** (e - 1)``.
    bias_lr_scale : float, default=1.0
        The bias tables ``bu`` and ``bi`` step with ``bias_lr_scale`` times
        the learning rate (both optimizers).
    init_std : float or None, default=None
        Embeddings start normal with this standard deviation; uniform on
        [-0.05, 0.05) like Keras when None.
    validation_fraction : float or None, default=None
        Share of the training ratings held out for early stopping (never
        the test ratings); no early stopping when None.
    patience : int, default=4
        Early stopping ends training after this many epochs without a
        better held-out RMSE, and restores the best epoch's weights.
    refit : bool, default=False
        After early stopping, retrain from scratch on all training ratings
        for the best epoch count.
    clip : bool, default=False
        Clip predictions to the range of the training ratings.
    average_epochs : int, default=1
        Keep the mean of the weights at the end of the last
        ``average_epochs`` epochs of the final run (with early stopping and
        no refit: of the epochs ending at the best one) instead of the last
        epoch's weights alone; 1 keeps the last epoch's.

    Attributes
    ----------
    params_ : dict of str to ndarray
        ``P``, ``Q``, ``bu``, ``bi`` and ``W1``, ``b1``, ... per dense layer
        (``W3``, ``b3`` is the output layer for two hidden layers).
    mu_ : float
        Mean training rating.
    user_map_, item_map_ : IdMap
        Raw id to row index.
    user_seen_, item_seen_ : ndarray of bool
        Which rows have training ratings.
    history_ : list of dict
        One record per epoch; see :func:`npmf.train.fit_loop`.
    best_epoch_ : int
        Epoch whose weights were kept (the last one without early stopping).
    rating_range_ : tuple of float
        Lowest and highest training rating (the clipping range).

    Notes
    -----
    ``x = [P[u], Q[i], bu[u], bi[i]]`` (width ``2k + 2``), ``a1 = f(x @ W1 +
    b1)``, ``a2 = f(a1 @ W2 + b2)`` and ``r_hat = mu + a2 @ W3 + b3``, with
    ``f`` the activation; see :mod:`npmf.models.mlp`. The output layer is
    linear whatever ``f`` is, as the Keras twin's final
    ``Activation('linear')`` makes it. Kernels start ``glorot_uniform``,
    biases zero, embeddings uniform on [-0.05, 0.05).
    """

    model_name = "deep"
    _param_names = (
        "n_factors",
        "hidden",
        "activation",
        "n_epochs",
        "batch_size",
        "learning_rate",
        "optimizer",
        "l2",
        "loss",
        "seed",
        "l2_dense",
        "penalty",
        "l2_bias",
        "lr_decay",
        "bias_lr_scale",
        "init_std",
        "validation_fraction",
        "patience",
        "refit",
        "clip",
        "average_epochs",
    )

    def __init__(
        self,
        n_factors=200,
        hidden=(2048, 256),
        activation="linear",
        n_epochs=65,
        batch_size=512,
        learning_rate=None,
        optimizer="sgd",
        l2=0.01,
        loss="rmse",
        seed=None,
        l2_dense=0.0,
        penalty="table",
        l2_bias=None,
        lr_decay=1.0,
        bias_lr_scale=1.0,
        init_std=None,
        validation_fraction=None,
        patience=4,
        refit=False,
        clip=False,
        average_epochs=1,
    ):
        self.n_factors = n_factors
        self.hidden = hidden
        self.activation = activation
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.l2 = l2
        self.loss = loss
        self.seed = seed
        self.l2_dense = l2_dense
        self.penalty = penalty
        self.l2_bias = l2_bias
        self.lr_decay = lr_decay
        self.bias_lr_scale = bias_lr_scale
        self.init_std = init_std
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.refit = refit
        self.clip = clip
        self.average_epochs = average_epochs

    def _check_hyperparameters(self):
        self._check_common()
        _check_nonneg_float("l2_dense", self.l2_dense)
        _check_hidden(self.hidden)
        if self.activation not in mlp.ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {tuple(mlp.ACTIVATIONS)}, "
                f"got {self.activation!r}"
            )

    def _predict_one_side(self, u, i):
        """Centred prediction when exactly one of ``u[b]``, ``i[b]`` is -1.

        Parameters
        ----------
        u, i : ndarray of int of shape (n,)
            Row indices, -1 for an unknown id.

        Returns
        -------
        ndarray of shape (n,)
            The network's prediction with the unknown side's embedding rows
            (factors and bias input) replaced by the mean of the trained rows
            of that table: an "average" user or item.

        Notes
        -----
        NOTE: ``bu`` and ``bi`` are inputs of the network, not additive
        biases, so the MF's ``mu + bu[u]`` fallback has no meaning here.
        """
        params = dict(self.params_)
        u, i = u.copy(), i.copy()
        for key_f, key_b, idx, seen in (
            ("P", "bu", u, self.user_seen_),
            ("Q", "bi", i, self.item_seen_),
        ):
            rows = seen if seen.any() else np.ones_like(seen)
            params[key_f] = np.vstack([params[key_f], params[key_f][rows].mean(axis=0)])
            params[key_b] = np.append(params[key_b], params[key_b][rows].mean())
            idx[idx < 0] = len(seen)  # the appended mean row
        return predict_batches(
            self._core(), params, u.astype(np.int32), i.astype(np.int32)
        ).astype(np.float64)

    def _core(self):
        return mlp.make(self.activation)

    def _init_params(self, n_users, n_items, rng):
        hidden = tuple(self.hidden)
        return mlp.init_params(
            n_users, n_items, self.n_factors, hidden, rng, init_std=self.init_std
        )

    def layer_table(self, n_users, n_items):
        """Rows of a Keras-like summary: (layer, output shape, parameter count).

        Parameters
        ----------
        n_users, n_items : int
            Table sizes.

        Returns
        -------
        list of tuple
            One ``(name, output_shape, n_params)`` per layer; dense layers
            count ``in * out`` kernel plus ``out`` bias parameters.
        """
        k = self.n_factors
        rows = [
            ("user (Input)", "(None,)", 0),
            ("item (Input)", "(None,)", 0),
            ("P (Embedding)", f"(None, {k})", n_users * k),
            ("Q (Embedding)", f"(None, {k})", n_items * k),
            ("bu (Embedding)", "(None,)", n_users),
            ("bi (Embedding)", "(None,)", n_items),
            ("x (Concatenate)", f"(None, {2 * k + 2})", 0),
        ]
        widths = (2 * k + 2, *self.hidden, 1)
        n_layers = len(widths) - 1
        for layer, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:]), 1):
            act = "linear" if layer == n_layers else self.activation
            name, shape = f"dense{layer} (Dense, {act})", f"(None, {fan_out})"
            rows.append((name, shape, fan_in * fan_out + fan_out))
        rows.append(("r_hat (Flatten)", "(None,)", 0))
        return rows


MODELS = {"mf": MFRegressor, "deep": DeepRegressor}
"""Estimator classes by model name (``--model`` in the CLI)."""
