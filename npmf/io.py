"""Saving and loading models as ``.npz`` files, and atomic file writes.

A model file holds plain arrays only (parameters, id maps, ``mu``, the
hyperparameters as JSON text, a format version); it is read with
``allow_pickle=False``, so loading never runs code from the file. Every
write goes to a temporary file in the target folder that is renamed into
place, so a crash or Ctrl-C leaves the previous file intact.
"""

import contextlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
"""Version of the model file layout; bumped on any incompatible change."""


class ModelFileError(ValueError):
    """Raised when a model file is missing, damaged or of another version."""


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path that replaces ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or Path
        Final destination.

    Yields
    ------
    Path
        Temporary file in the same folder; renamed onto ``path`` on success,
        deleted on any exception.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp makes the file private; give it the permissions open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_model(model, path, extra=None):
    """Write a fitted estimator to ``path`` atomically.

    Parameters
    ----------
    model : RatingModel
        Fitted estimator.
    path : str or Path
        Destination ``.npz`` file.
    extra : dict of str to ndarray, optional
        Additional arrays stored under ``extra.<key>`` (for example item
        titles aligned with the item ids).

    Raises
    ------
    NotFittedError
        If the model is not fitted.
    """
    model._check_fitted()
    config = {"model": model.model_name, "hyperparameters": model.get_params()}
    arrays = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "config": np.array(json.dumps(config)),
        "history": np.array(json.dumps(model.history_)),
        "mu": np.array(model.mu_, dtype=np.float64),
        "user_ids": model.user_map_.ids,
        "item_ids": model.item_map_.ids,
        "user_seen": model.user_seen_,
        "item_seen": model.item_seen_,
        "train_pairs": model.train_pairs_,
        "rating_range": np.array(model.rating_range_, dtype=np.float64),
    }
    arrays.update({f"param.{key}": W for key, W in model.params_.items()})
    for key, value in (extra or {}).items():
        arrays[f"extra.{key}"] = np.asarray(value)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())


def _read_npz(path):
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":
        raise ModelFileError(
            f"{path}: not an npmf model file (not an .npz archive; it starts "
            f"with {magic!r})"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise ModelFileError(
                f"{path}: holds pickled objects; npmf model files are plain arrays "
                f"and are never unpickled"
            ) from err
        raise ModelFileError(f"{path}: not a readable npmf model file ({err})") from err
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise ModelFileError(
            f"{path}: not a readable npmf model file (truncated or damaged: {err})"
        ) from err


def load_model(path):
    """Read an estimator written by :func:`save_model`.

    Parameters
    ----------
    path : str or Path
        Model file.

    Returns
    -------
    model : RatingModel
        A fitted estimator of the saved class and hyperparameters.
    extra : dict of str to ndarray
        The arrays saved with ``extra``.

    Raises
    ------
    ModelFileError
        If the file is missing, truncated, holds pickles, has another format
        version, or its arrays do not fit together.
    """
    from npmf.estimator import MODELS
    from npmf.ids import IdMap

    path = Path(path)
    data = _read_npz(path)
    for key in ("format_version", "config", "mu", "user_ids", "item_ids"):
        if key not in data:
            raise ModelFileError(f"{path}: not an npmf model file (no '{key}' array)")
    version = int(data["format_version"])
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version}, this npmf reads version "
            f"{FORMAT_VERSION}; retrain or use the npmf that wrote it"
        )
    try:
        config = json.loads(str(data["config"]))
        history = json.loads(str(data.get("history", "[]")))
    except json.JSONDecodeError as err:
        raise ModelFileError(f"{path}: damaged config or history ({err})") from err
    if not isinstance(config, dict) or config.get("model") not in MODELS:
        raise ModelFileError(f"{path}: unknown model in config {config!r:.80}")
    try:
        model = MODELS[config["model"]](**config.get("hyperparameters", {}))
        model._check_hyperparameters()
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: bad hyperparameters in config ({err})") from err

    try:
        model.user_map_ = IdMap(data["user_ids"])
        model.item_map_ = IdMap(data["item_ids"])
    except ValueError as err:
        raise ModelFileError(f"{path}: bad id map ({err})") from err
    model.mu_ = float(data["mu"])
    model.user_seen_ = data["user_seen"].astype(bool)
    model.item_seen_ = data["item_seen"].astype(bool)
    model.train_pairs_ = data["train_pairs"]
    model.history_ = history
    model.params_ = {k[6:]: v for k, v in data.items() if k.startswith("param.")}
    _check_shapes(path, model)
    for key, W in model.params_.items():
        if not np.all(np.isfinite(W)):
            raise ModelFileError(f"{path}: parameter {key} holds NaN or inf")
    if not np.isfinite(model.mu_):
        raise ModelFileError(f"{path}: mu is {model.mu_}")
    model.rating_range_ = tuple(
        float(v) for v in data.get("rating_range", (-np.inf, np.inf))
    )
    model.best_epoch_ = len(history)
    extra = {k[6:]: v for k, v in data.items() if k.startswith("extra.")}
    return model, extra


def _check_shapes(path, model):
    """Check saved parameters against the shapes a fresh model would have."""
    n_users, n_items = len(model.user_map_), len(model.item_map_)
    expected = model._init_params(n_users, n_items, _ShapeOnlyRng())
    for key, W in expected.items():
        got = model.params_.get(key)
        if got is None:
            raise ModelFileError(f"{path}: parameter {key} is missing")
        if got.shape != W.shape or got.dtype != W.dtype:
            raise ModelFileError(
                f"{path}: parameter {key} has shape {got.shape} {got.dtype}, "
                f"expected {W.shape} {W.dtype}"
            )
    extra_keys = set(model.params_) - set(expected)
    if extra_keys:
        raise ModelFileError(f"{path}: unexpected parameters {sorted(extra_keys)}")
    if model.user_seen_.shape != (n_users,) or model.item_seen_.shape != (n_items,):
        raise ModelFileError(f"{path}: seen masks do not match the id maps")


class _ShapeOnlyRng:
    """Stand-in generator that returns zeros; used to learn parameter shapes."""

    def uniform(self, low=0.0, high=1.0, size=None):
        return np.zeros(size)

    def normal(self, loc=0.0, scale=1.0, size=None):
        return np.zeros(size)


def save_checkpoint(path, params, optimizer, rng, history, fingerprint, settings=None):
    """Write a training checkpoint atomically.

    Parameters
    ----------
    path : str or Path
        Checkpoint file.
    params : dict of str to ndarray
        Current parameters.
    optimizer : SGD or Adamax
        Optimizer whose ``state()`` is saved.
    rng : numpy.random.Generator
        Generator whose state is saved, so the next epoch's permutation is
        the one an uninterrupted run would draw.
    history : list of dict
        Records of the completed epochs.
    fingerprint : str
        Hash of the data and hyperparameters the run uses.
    settings : dict or None, default=None
        The hyperparameters themselves, so that a mismatch can be named.
    """
    arrays = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "fingerprint": np.array(fingerprint),
        "settings": np.array(_settings_json(settings or {})),
        "history": np.array(json.dumps(history)),
        "rng_state": np.array(json.dumps(rng.bit_generator.state)),
    }
    arrays.update({f"param.{key}": W for key, W in params.items()})
    arrays.update({f"optim.{key}": a for key, a in optimizer.state().items()})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _settings_json(settings):
    """Hyperparameters as sorted JSON (tuples become lists)."""
    return json.dumps(settings, sort_keys=True, default=str)


def _settings_diff(saved, settings):
    """``"name: a there, b here"`` for each hyperparameter that differs."""
    try:
        theirs = json.loads(saved)
    except ValueError:
        return []
    ours = json.loads(_settings_json(settings))
    return [
        f"{key} {theirs.get(key)!r} there, {ours.get(key)!r} here"
        for key in sorted(set(theirs) | set(ours))
        if theirs.get(key) != ours.get(key)
    ]


def load_checkpoint(path, model, optimizer, rng, fingerprint, settings=None):
    """Restore parameters, optimizer and generator from a checkpoint.

    Parameters
    ----------
    path : str or Path
        Checkpoint file.
    model : RatingModel
        Estimator whose ``params_`` are overwritten in place.
    optimizer : SGD or Adamax
        Optimizer to restore.
    rng : numpy.random.Generator
        Generator to restore.
    fingerprint : str
        Hash of this run's data and hyperparameters.
    settings : dict or None, default=None
        This run's hyperparameters, to name the ones that differ.

    Returns
    -------
    history : list of dict
        Records of the completed epochs.

    Raises
    ------
    ModelFileError
        If the file is unreadable or comes from another run.
    """
    data = _read_npz(path)
    if str(data.get("fingerprint", "")) != fingerprint:
        diff = []
        if settings is not None and "settings" in data:
            diff = _settings_diff(str(data["settings"]), settings)
            what = "; ".join(diff) if diff else "same hyperparameters, other data"
        else:
            what = "different data or hyperparameters"
        raise ModelFileError(
            f"{path}: checkpoint of another run ({what}); delete it or train "
            f"without --resume"
        )
    for key, W in model.params_.items():
        saved = data.get(f"param.{key}")
        if saved is None or saved.shape != W.shape:
            raise ModelFileError(f"{path}: parameter {key} missing or misshapen")
        W[...] = saved
    optimizer.load_state({k[6:]: v for k, v in data.items() if k.startswith("optim.")})
    rng.bit_generator.state = json.loads(str(data["rng_state"]))
    return json.loads(str(data["history"]))
