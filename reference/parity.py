"""Step-for-step parity of npmf and its Keras twins.

Both sides start from the same weights (npmf's initialisation, copied into
Keras), see the same batches in the same order (one NumPy permutation, fed
to Keras with ``shuffle=False``; ``KERAS_SEMANTICS.md`` section 7), and are
compared parameter by parameter:

1. the gradient of the first step (total loss, penalty included);
2. the weights after ``n_steps`` optimizer steps (default one epoch);
3. the epoch ``loss`` npmf computes and the one Keras logs.

Notes
-----
The relative difference of a parameter is
``max_j |ours_j - keras_j| / max_j |keras_j|``: the largest absolute
difference over the largest magnitude of the Keras array. Dividing by the
largest entry, not entry by entry, keeps near-zero entries (penalty-only
rows, weights that Adamax drives through 0) from turning float32 rounding
into huge ratios. A gradient also passes when its largest absolute
difference is at most :data:`GRAD_ATOL`, and weights when theirs is at most
:data:`WEIGHT_ATOL`: a parameter that is itself tiny, such as the output
bias ``b3`` that Adamax pushes back and forth through 0 by about
``learning_rate`` per step, has ``max|keras|`` of a few 1e-6, and a
difference of 1e-9 there is float32 rounding, not a wrong step.
"""

from dataclasses import dataclass, field

import numpy as np

from npmf.gradcheck import loss_and_grads, make_core
from npmf.losses import get_loss
from npmf.models import mf, mlp
from npmf.optim import make_optimizer
from npmf.train import run_epoch
from reference import keras_models

GRAD_RTOL = 1e-5
"""Largest relative difference of a step-1 gradient (float32 both sides)."""

GRAD_ATOL = 1e-8
"""A step-1 gradient whose largest absolute difference is this small passes."""

WEIGHT_RTOL = 1e-4
"""Largest relative difference of the weights after one epoch."""

WEIGHT_ATOL = 1e-8
"""Weights whose largest absolute difference is this small pass (3 float32
ulps at 0.05, the embeddings' scale)."""

LOSS_ATOL = 1e-5
"""Largest absolute difference between npmf's and Keras's epoch loss."""

DEFAULT_BATCH_SIZE = {"mf": 256, "deep": 512}
"""The tutorial's batch sizes."""


@dataclass
class Difference:
    """How far one npmf array is from its Keras twin.

    Parameters
    ----------
    key : str
        Parameter key (``P``, ``W1``, ...).
    stage : {"grad", "weights"}
        Step-1 gradient or weights after the last step.
    max_abs : float
        ``max|ours - keras|``.
    rel : float
        ``max_abs / max|keras|``.
    index : tuple of int
        Position of the largest absolute difference.
    ok : bool
        Whether the difference is within tolerance.
    """

    key: str
    stage: str
    max_abs: float
    rel: float
    index: tuple
    ok: bool


@dataclass
class ParityReport:
    """Result of :func:`run_parity`.

    Parameters
    ----------
    model : str
        ``mf`` or ``deep``.
    optimizer : str
        ``sgd`` or ``adamax``.
    n_steps : int
        Optimizer steps taken on each side.
    rows : list of Difference
        Gradient rows, then weight rows, in parameter order.
    loss_npmf : float
        npmf's batch-size-weighted mean step loss over the steps.
    loss_keras : float
        Keras's logged ``loss`` over the same steps.
    """

    model: str
    optimizer: str
    n_steps: int
    rows: list = field(default_factory=list)
    loss_npmf: float = float("nan")
    loss_keras: float = float("nan")

    @property
    def loss_ok(self):
        """Return whether the epoch losses agree within :data:`LOSS_ATOL`."""
        return abs(self.loss_npmf - self.loss_keras) <= LOSS_ATOL

    @property
    def ok(self):
        """Return whether every row and the loss are within tolerance."""
        return self.loss_ok and all(row.ok for row in self.rows)

    @property
    def max_rel_diff(self):
        """Return the largest relative difference per stage, as a dict."""
        out = {}
        for row in self.rows:
            out[row.stage] = max(out.get(row.stage, 0.0), row.rel)
        return out

    def failures(self):
        """List the rows outside tolerance.

        Returns
        -------
        list of Difference
            Rows with ``ok`` False.
        """
        return [row for row in self.rows if not row.ok]


def difference(ours, keras, key, stage):
    """Measure how far ``ours`` is from ``keras`` and judge it.

    Parameters
    ----------
    ours : ndarray
        npmf array.
    keras : ndarray of the same shape
        Keras array, the reference.
    key : str
        Parameter key.
    stage : {"grad", "weights"}
        Which tolerance applies.

    Returns
    -------
    Difference
        Largest absolute and relative difference, where, and the verdict.

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    ours = np.asarray(ours, dtype=np.float64)
    keras = np.asarray(keras, dtype=np.float64)
    if ours.shape != keras.shape:
        raise ValueError(f"{key}: npmf shape {ours.shape} != Keras shape {keras.shape}")

    # largest absolute difference and where it is
    diff = np.abs(ours - keras)
    flat = int(np.argmax(diff))
    index = tuple(int(n) for n in np.unravel_index(flat, diff.shape))
    max_abs = float(diff.flat[flat])

    # relative to the largest Keras magnitude
    scale = float(np.max(np.abs(keras)))
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf)
    if stage == "grad":
        ok = rel <= GRAD_RTOL or max_abs <= GRAD_ATOL
    else:
        ok = rel <= WEIGHT_RTOL or max_abs <= WEIGHT_ATOL
    return Difference(key, stage, max_abs, rel, index, ok)


def compare(ours, keras, stage):
    """Compare two parameter (or gradient) dicts key by key.

    Parameters
    ----------
    ours : dict of str to ndarray
        npmf arrays.
    keras : dict of str to ndarray
        Keras arrays keyed the same way.
    stage : {"grad", "weights"}
        Which tolerance applies.

    Returns
    -------
    list of Difference
        One row per key of ``ours``, in its order.

    Raises
    ------
    KeyError
        If the key sets differ.
    """
    if set(ours) != set(keras):
        raise KeyError(f"npmf keys {sorted(ours)} != Keras keys {sorted(keras)}")
    return [difference(ours[key], keras[key], key, stage) for key in ours]


# ---------------------------------------------------------------- data


def load_tutorial_data(dataset="ml-100k", data_dir=None):
    """Load a MovieLens dataset and split it as the tutorial does.

    Parameters
    ----------
    dataset : str, default="ml-100k"
        Dataset name known to :mod:`npmf.data`.
    data_dir : path-like, optional
        Folder holding the datasets (``NPMF_DATA`` when None).

    Returns
    -------
    dict
        ``u``, ``i`` (int32), ``r`` (float32, rating - mu) for the training
        part; ``vu``, ``vi``, ``vr`` for the test part; ``n_users``,
        ``n_items`` (distinct ids in the whole file, the tables' sizes) and
        ``mu`` (mean training rating).

    Notes
    -----
    The split is ``sklearn.model_selection.train_test_split(ratings,
    test_size=0.2, random_state=2021)`` on the file's row order, via
    :func:`npmf.data.tutorial_split`. Ids map to ``0..n-1`` in sorted order
    over the whole file, as :class:`npmf.estimator.RatingModel` maps them.
    """
    from npmf import data
    from npmf.ids import IdMap

    ratings = data.load_dataset(dataset, data_dir)
    train, test = data.tutorial_split(ratings)
    user_map = IdMap.from_values(ratings["user"].to_numpy())
    item_map = IdMap.from_values(ratings["item"].to_numpy())
    mu = float(np.mean(train["rating"].to_numpy(dtype=np.float64)))

    out = {"n_users": len(user_map), "n_items": len(item_map), "mu": mu}
    for prefix, part in (("", train), ("v", test)):
        out[prefix + "u"] = user_map.to_index(part["user"].to_numpy()).astype(np.int32)
        out[prefix + "i"] = item_map.to_index(part["item"].to_numpy()).astype(np.int32)
        rating = part["rating"].to_numpy(dtype=np.float64)
        out[prefix + "r"] = (rating - mu).astype(np.float32)
    return out


# ---------------------------------------------------------------- parity


def init_params(model, n_users, n_items, n_factors, hidden, seed):
    """Draw npmf's initial parameters for either model.

    Parameters
    ----------
    model : {"mf", "deep"}
        Model name.
    n_users : int
        User rows.
    n_items : int
        Item rows.
    n_factors : int
        Embedding size ``k``.
    hidden : tuple of int
        Hidden widths (deep model only).
    seed : int
        Seed of ``np.random.default_rng``.

    Returns
    -------
    dict of str to ndarray
        float32 parameters.
    """
    rng = np.random.default_rng(seed)
    if model == "mf":
        return mf.init_params(n_users, n_items, n_factors, rng)
    return mlp.init_params(n_users, n_items, n_factors, hidden, rng)


def build_twin(
    model, n_users, n_items, n_factors, *, hidden, activation, **compile_args
):
    """Build the Keras twin of ``model``.

    Parameters
    ----------
    model : {"mf", "deep"}
        Model name.
    n_users : int
        User rows.
    n_items : int
        Item rows.
    n_factors : int
        Embedding size ``k``.
    hidden : tuple of int
        Hidden widths (deep model only).
    activation : str
        Hidden activation (deep model only).
    **compile_args
        ``l2``, ``loss``, ``optimizer``, ``learning_rate``.

    Returns
    -------
    keras.Model
        Compiled twin.
    """
    if model == "mf":
        return keras_models.build_mf(n_users, n_items, n_factors, **compile_args)
    return keras_models.build_deep(
        n_users,
        n_items,
        n_factors,
        hidden=hidden,
        activation=activation,
        **compile_args,
    )


def run_parity(
    data,
    model="mf",
    optimizer="sgd",
    *,
    n_steps=None,
    n_factors=200,
    hidden=(2048, 256),
    activation="linear",
    batch_size=None,
    learning_rate=None,
    l2=0.01,
    loss="rmse",
    seed=0,
    engine="auto",
):
    """Train npmf and its Keras twin side by side and compare them.

    Parameters
    ----------
    data : dict
        ``u``, ``i``, ``r``, ``n_users``, ``n_items`` as
        :func:`load_tutorial_data` returns them.
    model : {"mf", "deep"}, default="mf"
        Model name.
    optimizer : {"sgd", "adamax"}, default="sgd"
        Optimizer, Keras's defaults.
    n_steps : int, optional
        Optimizer steps; one epoch (``ceil(n / batch_size)``) when None.
    n_factors : int, default=200
        Embedding size ``k``.
    hidden : tuple of int, default=(2048, 256)
        Hidden widths (deep model only).
    activation : str, default="linear"
        Hidden activation (deep model only).
    batch_size : int, optional
        Batch size; the tutorial's (256 for mf, 512 for deep) when None.
    learning_rate : float, optional
        Step size; the optimizer's default when None.
    l2 : float, default=0.01
        Whole-table penalty weight.
    loss : {"rmse", "mse"}, default="rmse"
        Loss.
    seed : int, default=0
        Seed of npmf's initialisation and of the one permutation.
    engine : {"auto", "fast", "reference"}, default="auto"
        npmf training path (:func:`npmf.train.run_epoch`): ``"reference"``
        steps through :func:`npmf.train.train_step`; ``"auto"``, what
        ``fit`` uses, takes the fast path of :mod:`npmf.fast` where one
        exists. The step-1 gradient always comes from the reference path.

    Returns
    -------
    ParityReport
        Step-1 gradient and final weight differences, and both epoch losses.
    """
    batch_size = batch_size or DEFAULT_BATCH_SIZE[model]
    n_users, n_items = data["n_users"], data["n_items"]
    core = make_core(model, activation)

    # same weights on both sides: npmf's draw, copied into Keras
    params = init_params(model, n_users, n_items, n_factors, hidden, seed)
    twin = build_twin(
        model,
        n_users,
        n_items,
        n_factors,
        hidden=hidden,
        activation=activation,
        l2=l2,
        loss=loss,
        optimizer=optimizer,
        learning_rate=learning_rate,
    )

    # same batches: one permutation, cut to n_steps batches
    order = np.random.default_rng(seed).permutation(len(data["r"]))  # (n,)
    n_used = len(order) if n_steps is None else min(len(order), n_steps * batch_size)
    u, i, r = (data[key][order[:n_used]] for key in ("u", "i", "r"))  # (n_used,)
    report = ParityReport(model, optimizer, -(-n_used // batch_size))

    # step-1 gradients at the initial weights (this also loads them)
    first = slice(0, batch_size)
    _, grads_keras = keras_models.keras_gradients(
        twin, params, u[first], i[first], r[first]
    )
    _, grads = loss_and_grads(
        core, params, u[first], i[first], r[first], loss=loss, l2=l2
    )
    report.rows += compare(grads, grads_keras, "grad")

    # n_steps optimizer steps on each side
    report.loss_keras = keras_models.fit_keras(twin, u, i, r, batch_size=batch_size)
    report.loss_npmf = run_epoch(
        core,
        params,
        make_optimizer(optimizer, learning_rate),
        u,
        i,
        r,
        batch_size=batch_size,
        loss_fn=get_loss(loss),
        l2=l2,
        engine=engine,
    )
    report.rows += compare(params, keras_models.from_keras_weights(twin), "weights")
    return report


def format_report(report):
    """Lay out a report as the lines ``npmf parity`` prints.

    Parameters
    ----------
    report : ParityReport
        Result of :func:`run_parity`.

    Returns
    -------
    list of str
        A header, one row per parameter and stage, the loss row, and a last
        line starting ``max_rel_diff`` that ends in ``ok`` or names the
        parameter and index that broke a tolerance.
    """
    lines = [
        f"{'stage':<8}{'key':<5}{'max_abs_diff':>14}{'rel_diff':>12}  "
        f"{'index':<14}verdict"
    ]
    for row in report.rows:
        index = str(row.index)
        lines.append(
            f"{row.stage:<8}{row.key:<5}{row.max_abs:>14.3e}{row.rel:>12.3e}  "
            f"{index:<14}{'ok' if row.ok else 'FAIL'}"
        )
    loss_diff = report.loss_npmf - report.loss_keras
    lines.append(
        f"loss    npmf {report.loss_npmf:.7f} keras {report.loss_keras:.7f} "
        f"diff {loss_diff:+.3e}  {'ok' if report.loss_ok else 'FAIL'}"
    )

    # summary line: worst per stage, then the verdict
    worst = report.max_rel_diff
    summary = (
        f"max_rel_diff grad {worst.get('grad', 0.0):.3e} "
        f"(tol {GRAD_RTOL:g} or abs {GRAD_ATOL:g}) "
        f"weights {worst.get('weights', 0.0):.3e} "
        f"(tol {WEIGHT_RTOL:g} or abs {WEIGHT_ATOL:g}) "
        f"loss_abs_diff {abs(loss_diff):.3e} (tol {LOSS_ATOL:g}): "
    )
    failures = report.failures()
    if failures:
        first = max(failures, key=lambda row: row.rel)
        summary += (
            f"FAIL {first.stage} {first.key} at index {first.index}: rel "
            f"{first.rel:.3e}, abs {first.max_abs:.3e}"
        )
    elif not report.loss_ok:
        summary += f"FAIL epoch loss differs by {loss_diff:+.3e}"
    else:
        summary += "ok"
    lines.append(summary)
    return lines
