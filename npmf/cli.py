"""Command-line interface: ``npmf train | summary | predict | recommend | download``.

This is the only module that prints. User errors end with one line on
stderr and exit status 2 (``--debug`` shows the traceback instead).
"""

import argparse
import csv
import json
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np

from npmf import __version__

logger = logging.getLogger("npmf")

SPLITS = ("tutorial", "u1", "u2", "u3", "u4", "u5", "ua", "ub", "random")


class UsageError(Exception):
    """A mistake in the command line or its inputs, reported in one line."""


def _plural(n, word):
    """``"1 epoch"``, ``"2 epochs"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def check_out(path, folder):
    """Refuse an ``--out`` that cannot be written, before any work is done.

    ``folder`` says whether ``path`` is a folder to fill (``train``) or a
    file to write. The nearest existing ancestor must be a folder: a file in
    the way would only fail once the outputs are written.
    """
    if path.exists() and path.is_dir() != folder:
        kind = "is not a folder" if folder else "is a folder, not a file"
        raise UsageError(f"--out {path} exists and {kind}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"--out {path}: {parent} is a file, not a folder")
            return


# ---------------------------------------------------------------- arguments


def _add_data_args(p, splits=True):
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default=None,
        help="named dataset: ml-100k, ml-1m, ml-latest-small, ml-25m "
        "(default ml-100k unless --ratings is given)",
    )
    g.add_argument(
        "--ratings",
        type=Path,
        default=None,
        help="train on this ratings file instead of a named dataset",
    )
    g.add_argument(
        "--format",
        default=None,
        choices=("ml-100k", "ml-1m", "ml-latest", "csv"),
        help="format of --ratings (default: csv)",
    )
    g.add_argument("--user-col", default="user", help="user column of a csv file")
    g.add_argument("--item-col", default="item", help="item column of a csv file")
    g.add_argument("--rating-col", default="rating", help="rating column of a csv file")
    g.add_argument("--sep", default=None, help="field separator of a csv file")
    g.add_argument(
        "--duplicates",
        default="error",
        choices=("error", "last", "first", "mean"),
        help="what to do with repeated (user, item) pairs",
    )
    g.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding the datasets (default: $NPMF_DATA)",
    )
    g.add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help="fail instead of downloading a missing named dataset",
    )
    if splits:
        g.add_argument(
            "--split",
            default="tutorial",
            choices=SPLITS,
            help="tutorial 80/20 split (random_state 2021), a canonical "
            "ml-100k fold, or a seeded random split",
        )
        g.add_argument(
            "--test-size",
            type=float,
            default=None,
            help="test fraction of --split random (default 0.2)",
        )


def _add_model_args(p):
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        choices=("mf", "deep"),
        help="model family (default mf, or the preset's)",
    )
    g.add_argument(
        "--preset",
        default=None,
        help="named recipe (tutorial, tutorial-deep, mf-best, deep-best); "
        "flags given override its values",
    )
    g.add_argument(
        "--factors",
        dest="n_factors",
        type=int,
        default=None,
        help="embedding size k (default 200)",
    )
    g.add_argument(
        "--hidden",
        default=None,
        help="deep model: hidden widths, comma separated (default 2048,256)",
    )
    g.add_argument(
        "--activation",
        default=None,
        help="deep model: linear, relu, sigmoid or tanh (default linear)",
    )


def _add_train_args(p):
    g = p.add_argument_group("training")
    g.add_argument(
        "--epochs",
        dest="n_epochs",
        type=int,
        default=None,
        help="epochs (default 60 for mf, 65 for deep)",
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="batch size (default 256 for mf, 512 for deep)",
    )
    g.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="step size (default: 0.01 for sgd, 0.001 for adamax)",
    )
    g.add_argument("--optimizer", default=None, choices=("sgd", "adamax"))
    g.add_argument(
        "--l2",
        type=float,
        default=None,
        help="whole-table L2 weight on the embeddings (default 0.01)",
    )
    g.add_argument("--loss", default=None, choices=("rmse", "mse"))
    g.add_argument("--seed", type=int, default=None, help="random seed")
    g.add_argument(
        "--penalty",
        default=None,
        choices=("table", "rows"),
        help="L2 on whole tables (tutorial) or on the batch's rows",
    )
    g.add_argument(
        "--l2-bias",
        type=float,
        default=None,
        help="L2 weight on the bias tables (default: --l2)",
    )
    g.add_argument(
        "--l2-dense",
        type=float,
        default=None,
        help="deep model: L2 weight on the dense kernels (default 0)",
    )
    g.add_argument(
        "--lr-decay",
        type=float,
        default=None,
        help="multiply the learning rate by this after every epoch",
    )
    g.add_argument(
        "--bias-lr-scale",
        type=float,
        default=None,
        help="step size of the bias tables, as a multiple of the learning rate",
    )
    g.add_argument(
        "--average-epochs",
        type=int,
        default=None,
        help="keep the mean weights of the final run's last N epochs (default 1)",
    )
    g.add_argument(
        "--init-std",
        type=float,
        default=None,
        help="normal embedding init with this std (default: Keras uniform)",
    )
    g.add_argument(
        "--validation-fraction",
        type=float,
        default=None,
        help="hold out this share of the training ratings for early stopping",
    )
    g.add_argument(
        "--patience",
        type=int,
        default=None,
        help="early stopping: epochs without improvement (default 4)",
    )
    g.add_argument(
        "--refit",
        action="store_const",
        const=True,
        default=None,
        help="after early stopping, retrain on all training ratings",
    )
    g.add_argument(
        "--clip",
        action="store_const",
        const=True,
        default=None,
        help="clip predictions to the training rating range",
    )


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line, like npmf's own."""

    def error(self, message):
        """Print ``PROG: error: MESSAGE (see PROG --help)`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    """Build the argument parser.

    Returns
    -------
    argparse.ArgumentParser
        Parser with one subcommand per action.
    """
    # NOTE: no abbreviated flags: "--lr" would silently mean --lr-decay
    parser = _Parser(
        prog="npmf",
        description="NumPy matrix factorisation and deep recommenders.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"npmf {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        allow_abbrev=False,
        help="train a model and evaluate it on the test split",
    )
    _add_model_args(p)
    _add_train_args(p)
    _add_data_args(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--checkpoint",
        action="store_true",
        help="save the last completed epoch to OUT/checkpoint.npz",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.npz (implies --checkpoint)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "cv", allow_abbrev=False, help="cross-validate over the canonical ml-100k folds"
    )
    _add_model_args(p)
    _add_train_args(p)
    _add_data_args(p, splits=False)
    p.add_argument(
        "--folds",
        default="u1,u2,u3,u4,u5",
        help="comma-separated folds among u1..u5, ua, ub",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="write per-fold scores to this json file"
    )
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser(
        "summary", allow_abbrev=False, help="print layers and parameter counts"
    )
    _add_model_args(p)
    _add_data_args(p, splits=False)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser(
        "predict", allow_abbrev=False, help="predict ratings with a trained model"
    )
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--user", default=None)
    p.add_argument("--item", default=None)
    p.add_argument(
        "--pairs",
        type=Path,
        default=None,
        help="file of pairs: csv or tab separated, header with user and item",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="write predictions here (csv)"
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "recommend",
        allow_abbrev=False,
        help="top-N items for a user",
        description="The user's top-N items by predicted rating, leaving out the "
        "items the user rated in training.",
    )
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("-n", type=int, default=10, help="how many items")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser(
        "download", allow_abbrev=False, help="download a named dataset from GroupLens"
    )
    p.add_argument("name", help="ml-100k, ml-1m, ml-latest-small or ml-25m")
    p.add_argument("--data-dir", type=Path, default=None)
    p.set_defaults(func=cmd_download)

    p = sub.add_parser(
        "parity", allow_abbrev=False, help="compare gradients and training with Keras"
    )
    p.add_argument("--model", default="mf", choices=("mf", "deep"))
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adamax"))
    p.add_argument(
        "--steps", type=int, default=None, help="optimizer steps (default: one epoch)"
    )
    p.add_argument(
        "--activation",
        default=None,
        choices=("linear", "relu", "sigmoid", "tanh"),
        help="deep model: hidden activation (default linear)",
    )
    p.add_argument(
        "--hidden",
        default=None,
        help="deep model: hidden widths, comma separated (default 2048,256)",
    )
    p.add_argument(
        "--factors",
        dest="n_factors",
        type=int,
        default=200,
        help="embedding size k (default 200)",
    )
    p.add_argument(
        "--dataset", default="ml-100k", help="named dataset (default ml-100k)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding the datasets (default: $NPMF_DATA)",
    )
    p.add_argument("--seed", type=int, default=0, help="initialisation and order seed")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser(
        "gradcheck", allow_abbrev=False, help="check gradients by central differences"
    )
    p.add_argument("--model", default="mf", choices=("mf", "deep"))
    p.add_argument(
        "--activation", default="linear", choices=("linear", "relu", "sigmoid", "tanh")
    )
    p.add_argument("--loss", default="rmse", choices=("rmse", "mse"))
    p.set_defaults(func=cmd_gradcheck)
    return parser


# ---------------------------------------------------------------- data


def load_ratings(args):
    """Load the ratings table the arguments name, with titles when known.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    ratings : DataFrame
        Columns ``user``, ``item``, ``rating``.
    titles : dict
        Raw item id to title (empty when unknown).
    source : str
        Dataset name or file path, for messages.
    """
    from npmf import data

    if args.ratings is not None:
        if args.dataset is not None:
            raise UsageError("give either --dataset or --ratings, not both")
        ratings = data.read_ratings(
            args.ratings,
            args.format or "csv",
            sep=args.sep,
            user_col=args.user_col,
            item_col=args.item_col,
            rating_col=args.rating_col,
            duplicates=args.duplicates,
        )
        return ratings, {}, str(args.ratings)
    name = args.dataset or "ml-100k"
    if name not in data.DATASETS:
        raise UsageError(
            f"--dataset must be one of {sorted(data.DATASETS)}, got {name!r}"
        )
    layout = {
        "--format": args.format is not None,
        "--sep": args.sep is not None,
        "--user-col": args.user_col != "user",
        "--item-col": args.item_col != "item",
        "--rating-col": args.rating_col != "rating",
    }
    given = [flag for flag, set_ in layout.items() if set_]
    if given:
        verb = "describes" if len(given) == 1 else "describe"
        raise UsageError(
            f"{', '.join(given)} {verb} a --ratings file; the named dataset "
            f"{name} has its own layout"
        )
    ratings = data.load_dataset(
        name, args.data_dir, download=args.download, duplicates=args.duplicates
    )
    try:
        titles = data.read_titles(name, args.data_dir)
    except (data.DataError, OSError) as err:
        logger.warning("no titles: %s", err)
        titles = {}
    return ratings, titles, name


def split_ratings(args, ratings, source):
    """Split the ratings as ``--split`` asks.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.
    ratings : DataFrame
        The whole table.
    source : str
        Dataset name or file, for messages.

    Returns
    -------
    train, test : DataFrame
        The two parts.
    """
    from npmf import data

    if args.test_size is not None and args.split != "random":
        raise UsageError(
            f"--test-size applies to --split random, not --split {args.split} "
            f"(its test part is fixed)"
        )
    if args.split == "tutorial":
        return data.tutorial_split(ratings)
    if args.split == "random":
        return data.random_split(
            ratings,
            test_size=0.2 if args.test_size is None else args.test_size,
            seed=0 if args.seed is None else args.seed,
        )
    if source != "ml-100k":
        raise UsageError(f"--split {args.split} exists for ml-100k only, not {source}")
    return data.canonical_split(args.split, args.data_dir)


def build_estimator(args):
    """Make the estimator the model and training flags describe.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    RatingModel
        Unfitted estimator; unset flags keep the class defaults.
    """
    from npmf.estimator import MODELS
    from npmf.presets import get_preset

    kwargs = {}
    if getattr(args, "preset", None) is not None:
        preset = get_preset(args.preset)
        if args.model is not None and args.model != preset["model"]:
            raise UsageError(
                f"--preset {args.preset} is for --model {preset['model']}, "
                f"got --model {args.model}"
            )
        args.model = preset["model"]
        kwargs.update(preset["hyperparameters"])
    if args.model is None:
        args.model = "mf"
    if args.model not in MODELS:
        raise UsageError(f"--model {args.model} is not available in this version")
    cls = MODELS[args.model]
    for key in cls._param_names:
        value = getattr(args, key, None)
        if value is not None:
            kwargs[key] = value
    if "hidden" in cls._param_names and args.hidden is not None:
        try:
            kwargs["hidden"] = tuple(int(w) for w in args.hidden.split(","))
        except ValueError as err:
            raise UsageError(
                f"--hidden must be comma-separated integers like 2048,256, "
                f"got {args.hidden!r}"
            ) from err
    if "hidden" not in cls._param_names and (
        args.hidden is not None or args.activation is not None
    ):
        raise UsageError(
            f"--hidden and --activation apply to --model deep, not {args.model}"
        )
    return cls(**kwargs)


# ---------------------------------------------------------------- commands


def _format_record(record, n_epochs):
    parts = [f"epoch {record['epoch']}/{n_epochs}"]
    for key in ("loss", "rmse", "val_loss", "val_rmse"):
        if key in record:
            parts.append(f"{key} {record[key]:.4f}")
    parts.append(f"time {record['seconds']:.2f}s")
    return " ".join(parts)


def cmd_train(args):
    """Train, write model, history and plot, print the test RMSE."""
    from npmf.io import atomic_path, save_model

    # check the flags before reading any data
    model = build_estimator(args)
    model._check_hyperparameters()
    check_out(args.out, folder=True)
    checkpoint = args.out / "checkpoint.npz" if args.checkpoint or args.resume else None
    if args.resume and not checkpoint.is_file():
        print(f"note: no checkpoint at {checkpoint}; training from epoch 1")

    ratings, titles, source = load_ratings(args)
    train, test = split_ratings(args, ratings, source)
    print(
        f"data {source}: {len(ratings)} ratings, {ratings.user.nunique()} users, "
        f"{ratings.item.nunique()} items; train {len(train)}, test {len(test)}"
    )

    ran = []  # the epochs of this run, not those resumed from a checkpoint

    def on_epoch_end(rec):
        ran.append(rec)
        print(_format_record(rec, model.n_epochs), flush=True)

    t0 = time.perf_counter()
    model.fit(
        train[["user", "item"]],
        train["rating"].to_numpy(),
        validation_data=(test[["user", "item"]], test["rating"].to_numpy()),
        user_ids=ratings["user"].unique(),
        item_ids=ratings["item"].unique(),
        progress=not args.no_progress and sys.stderr.isatty(),
        on_epoch_end=on_epoch_end,
        checkpoint=checkpoint,
        resume=args.resume,
    )
    seconds = time.perf_counter() - t0
    scores = model.evaluate(test[["user", "item"]], test["rating"].to_numpy())

    # outputs: model, history, plot; each written atomically
    out = args.out
    extra = {}
    if titles:
        extra["item_titles"] = np.array(
            [str(titles.get(raw, "")) for raw in model.item_map_.ids.tolist()]
        )
    # the four files are one result: Ctrl-C waits until all are written
    with _sigint_deferred() as interrupted:
        save_model(model, out / "model.npz", extra=extra)
        _write_history(model.history_, out / "history.csv", atomic_path)
        _plot_history(model.history_, out / "rmse.png", atomic_path)
        with atomic_path(out / "metrics.json") as tmp:
            tmp.write_text(json.dumps(scores, indent=2) + "\n")

    # NOTE: with early stopping `ran` also holds the search before the
    # refit; a resumed run (never early-stopped) lacks the checkpoint's epochs
    resumed = max(len(model.history_) - len(ran), 0) if args.resume else 0
    print(
        f"trained {_plural(len(model.history_) - resumed, 'epoch')} in {seconds:.1f}s"
        + (f" after {_plural(resumed, 'epoch')} from the checkpoint" if resumed else "")
        + f"; wrote {out}/model.npz, history.csv, metrics.json, rmse.png"
    )
    if interrupted:
        print(
            "npmf: interrupted while writing; all outputs were completed first",
            file=sys.stderr,
        )
        return 130
    known = (
        ""
        if scores["n_known"] == scores["n"]
        else f"; known pairs {scores['n_known']}: rmse {scores['rmse_known']:.4f}"
    )
    print(
        f"test_rmse {scores['rmse']:.4f} test_mae {scores['mae']:.4f} "
        f"(n={scores['n']}{known})"
    )
    return 0


class _sigint_deferred:
    """Hold SIGINT during a block; the ``as`` value is truthy if one came."""

    def __enter__(self):
        import signal

        self.received = []
        self._signal = signal
        try:
            self._old = signal.signal(signal.SIGINT, lambda *a: self.received.append(1))
        except ValueError:  # not the main thread: nothing to defer
            self._old = None
        return self.received

    def __exit__(self, *exc):
        if self._old is not None:
            self._signal.signal(self._signal.SIGINT, self._old)
        return False


def _write_history(history, path, atomic_path):
    keys = list(history[0].keys()) if history else ["epoch"]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)


def _plot_history(history, path, atomic_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [rec["epoch"] for rec in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [rec["rmse"] for rec in history], label="train")
    if history and "val_rmse" in history[0]:
        ax.plot(epochs, [rec["val_rmse"] for rec in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE (whole set)")
    ax.set_title("Model RMSE")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def cmd_cv(args):
    """Train and score on each fold; print per-fold and mean RMSE and MAE."""
    from npmf import data
    from npmf.cv import fit_and_score, summarize

    if args.ratings is not None or (args.dataset or "ml-100k") != "ml-100k":
        raise UsageError("cv uses the canonical ml-100k folds: --dataset ml-100k only")
    if args.out is not None:
        check_out(args.out, folder=False)
    folds = [f.strip() for f in args.folds.split(",") if f.strip()]
    bad = [f for f in folds if f not in data.CANONICAL_FOLDS]
    if not folds or bad:
        raise UsageError(
            f"--folds must list folds among {', '.join(data.CANONICAL_FOLDS)}, "
            f"got {args.folds!r}"
        )
    data.dataset_path("ml-100k", args.data_dir, download=args.download)

    t0 = time.perf_counter()
    scores = []
    for fold in folds:
        train, test = data.canonical_split(fold, args.data_dir)
        model = build_estimator(args)
        s = fit_and_score(model, train, test)
        s["fold"] = fold
        scores.append(s)
        print(
            f"fold {fold} rmse {s['rmse']:.4f} mae {s['mae']:.4f} "
            f"epochs {s['epochs']} time {s['seconds']:.1f}s",
            flush=True,
        )
    total = summarize(scores)
    wall = time.perf_counter() - t0
    if args.out is not None:
        from npmf.io import atomic_path

        with atomic_path(args.out) as tmp:
            tmp.write_text(
                json.dumps(
                    {
                        "folds": scores,
                        "summary": total,
                        "model": model.model_name,
                        "hyperparameters": model.get_params(),
                        "seconds": wall,
                    },
                    indent=2,
                )
                + "\n"
            )
    print(
        f"mean_rmse {total['mean_rmse']:.4f} ± {total['std_rmse']:.4f} "
        f"mean_mae {total['mean_mae']:.4f} ± {total['std_mae']:.4f} "
        f"folds {total['n_folds']} wall {wall:.1f}s"
    )
    return 0


def cmd_summary(args):
    """Print a Keras-like layer table and the parameter total."""
    ratings, _, source = load_ratings(args)
    model = build_estimator(args)
    n_users, n_items = ratings.user.nunique(), ratings.item.nunique()
    rows = model.layer_table(n_users, n_items)
    print(f'Model: "{model.model_name}" on {source} ({n_users} users, {n_items} items)')
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'Layer (type)':<{width}}{'Output Shape':<16}{'Param #':>12}")
    print("-" * (width + 28))
    for name, shape, count in rows:
        print(f"{name:<{width}}{shape:<16}{count:>12,}")
    print("-" * (width + 28))
    print(f"Total params: {sum(r[2] for r in rows):,}")
    return 0


def _load_model_dir(model_dir):
    from npmf.io import load_model

    return load_model(Path(model_dir) / "model.npz")


def _raw_id(text, id_map):
    """Convert a command-line id to the map's id type."""
    if id_map.ids.dtype.kind in "iu":
        try:
            return int(text)
        except ValueError:
            return text
    return str(text)


def _raw_ids(texts, id_map):
    """Convert a column of ids to the map's id type, one by one.

    NOTE: with integer ids, a text that is no integer cannot be in the map;
    it becomes an integer below every known id, so it is reported unknown
    without turning the whole column into text (which would make every id
    of the column unknown).
    """
    if id_map.ids.dtype.kind not in "iu":
        return [str(t) for t in texts]
    absent = int(id_map.ids.min()) - 1 if len(id_map.ids) else -1
    out = []
    for text in texts:
        value = _raw_id(text, id_map)
        out.append(value if isinstance(value, int) else absent)
    return out


def _read_pairs(path):
    """Read a --pairs file: a header naming user and item, then one pair a line."""
    import pandas as pd

    try:
        pairs = pd.read_csv(
            path,
            sep=_guess_sep(path),
            engine="python",
            dtype=str,
            keep_default_na=False,
        )
    except pd.errors.ParserError as err:
        raise UsageError(f"{path}: {err}") from err
    except pd.errors.EmptyDataError as err:
        raise UsageError(f"{path}: the file is empty") from err
    missing = {"user", "item"} - set(pairs.columns)
    if missing:
        raise UsageError(
            f"{path}: line 1 must be a header naming the columns user and "
            f"item, got {list(pairs.columns)}"
        )
    for column in ("user", "item"):
        empty = pairs[column].isna() | (pairs[column].str.strip() == "")
        if empty.any():
            # line 1 is the header
            line = int(np.flatnonzero(empty.to_numpy())[0]) + 2
            raise UsageError(
                f"{path}: line {line}: column {column} is empty; expected an id"
            )
    return pairs


def cmd_predict(args):
    """Predict ratings for one pair or a file of pairs."""
    import pandas as pd

    if args.out is not None:
        check_out(args.out, folder=False)
    model, _ = _load_model_dir(args.model_dir)
    if args.pairs is not None:
        if args.user is not None or args.item is not None:
            raise UsageError("give either --pairs or --user and --item, not both")
        pairs = _read_pairs(args.pairs)
        shown_users, shown_items = list(pairs["user"]), list(pairs["item"])
    elif args.user is not None and args.item is not None:
        shown_users, shown_items = [args.user], [args.item]
    else:
        raise UsageError("give --user and --item, or --pairs FILE")
    users = _raw_ids(shown_users, model.user_map_)
    items = _raw_ids(shown_items, model.item_map_)
    pred, ustat, istat = model.predict_detail(
        pd.DataFrame({"user": users, "item": items})
    )
    table = pd.DataFrame(
        {
            "user": shown_users,
            "item": shown_items,
            "prediction": np.round(pred, 4),
            "user_status": ustat,
            "item_status": istat,
        }
    )
    if args.out is not None:
        from npmf.io import atomic_path

        with atomic_path(args.out) as tmp:
            table.to_csv(tmp, index=False, float_format="%.4f")
        print(f"wrote {len(table)} predictions to {args.out}")
    else:
        # four decimals always, so the column reads alike from model to model
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    return 0


def _guess_sep(path):
    """Tab, comma or semicolon, from the first line; else runs of blanks."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
    for sep in ("\t", ",", ";"):
        if sep in first:
            return sep
    return r"\s+"


def cmd_recommend(args):
    """Print the top-N unrated items for a user."""
    model, extra = _load_model_dir(args.model_dir)
    if args.n < 1:
        raise UsageError(f"-n must be >= 1, got {args.n}")
    raw = _raw_id(args.user, model.user_map_)
    if raw not in model.user_map_:
        raise UsageError(
            f"user {args.user} is not in the model's {len(model.user_map_)} users"
        )
    u = int(model.user_map_.to_index([raw])[0])
    if not model.user_seen_[u]:
        print(
            f"note: user {args.user} has no training ratings; its row was never fitted"
        )

    from npmf.recommend import top_n

    rows = top_n(model, u, args.n)
    titles = extra.get("item_titles")
    print(f"top {len(rows)} for user {args.user}:")
    for rank, (i, score) in enumerate(rows, start=1):
        raw_item = model.item_map_.ids[i]
        title = f"  {titles[i]}" if titles is not None else ""
        print(f"{rank:>3}. item {raw_item} predicted {score:.3f}{title}")
    return 0


def cmd_download(args):
    """Download and verify a named dataset."""
    from npmf import data

    path = data.download(args.name, args.data_dir)
    print(f"{args.name} is in {path}")
    return 0


def cmd_parity(args):
    """Train npmf and its Keras twin side by side and print the differences."""
    # NOTE: TensorFlow and reference/ are imported here, inside the command,
    # so that npmf itself never imports TensorFlow and every other command
    # starts without it.
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow  # noqa: F401
    except ImportError as err:
        raise UsageError(
            "parity needs TensorFlow; install it with: pip install -e '.[test]'"
        ) from err
    try:
        from reference import parity
    except ImportError as err:
        raise UsageError(
            f"parity needs the reference package of the npmf repository ({err}); "
            f"install it with: pip install -e '.[test]'"
        ) from err

    if args.model == "mf" and (args.hidden is not None or args.activation is not None):
        raise UsageError("--hidden and --activation apply to --model deep, not mf")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if args.n_factors < 1:
        raise UsageError(f"--factors must be >= 1, got {args.n_factors}")
    try:
        hidden = tuple(int(w) for w in (args.hidden or "2048,256").split(","))
    except ValueError as err:
        raise UsageError(
            f"--hidden must be comma-separated integers like 2048,256, "
            f"got {args.hidden!r}"
        ) from err
    activation = args.activation or "linear"

    data = parity.load_tutorial_data(args.dataset, args.data_dir)
    batch_size = parity.DEFAULT_BATCH_SIZE[args.model]
    t0 = time.perf_counter()
    report = parity.run_parity(
        data,
        args.model,
        args.optimizer,
        n_steps=args.steps,
        n_factors=args.n_factors,
        hidden=hidden,
        activation=activation,
        seed=args.seed,
    )
    seconds = time.perf_counter() - t0

    widths = ",".join(map(str, hidden))
    detail = f" {activation} {widths}" if args.model == "deep" else ""
    print(
        f"parity {args.model}{detail} {args.optimizer} on {args.dataset}: "
        f"{report.n_steps} steps of batch {batch_size} from identical weights, "
        f"seed {args.seed}"
    )
    lines = parity.format_report(report)
    print("\n".join(lines[:-1]))
    print(f"time {seconds:.1f}s")
    print(lines[-1])
    return 0 if report.ok else 1


def cmd_gradcheck(args):
    """Check every gradient of a tiny model against central differences."""
    from npmf import gradcheck

    core, params, u, i, r = gradcheck.tiny_problem(args.model, args.activation)
    errors = gradcheck.check_gradients(core, params, u, i, r, loss=args.loss)
    detail = f" {args.activation}" if args.model == "deep" else ""
    print(
        f"gradcheck {args.model}{detail}, loss {args.loss} + whole-table l2: float64 "
        f"central differences on a batch of {len(u)} with repeated users and items"
    )
    for key, err in errors.items():
        print(f"{key:<4} rel_error {err:.3e}")
    worst = max(errors, key=errors.get)
    tol = gradcheck.GRADCHECK_TOLERANCE
    ok = errors[worst] <= tol
    print(
        f"worst_rel_error {errors[worst]:.3e} ({worst}, tol {tol:g}): "
        f"{'ok' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


# ---------------------------------------------------------------- entry point


_FLAG_NAMES = {
    "sep=": "--sep ",
    "user_col=": "--user-col ",
    "item_col=": "--item-col ",
    "rating_col=": "--rating-col ",
    "duplicates=": "--duplicates ",
}


_PARAM_FLAGS = {
    "n_factors": "--factors",
    "n_epochs": "--epochs",
    "batch_size": "--batch-size",
    "learning_rate": "--learning-rate",
    "lr_decay": "--lr-decay",
    "bias_lr_scale": "--bias-lr-scale",
    "l2_bias": "--l2-bias",
    "l2_dense": "--l2-dense",
    "init_std": "--init-std",
    "validation_fraction": "--validation-fraction",
    "average_epochs": "--average-epochs",
}
"""Estimator hyperparameters whose command-line flag has another name."""

_SAME_NAME_FLAGS = (
    "l2",
    "test_size",
    "patience",
    "activation",
    "checkpoint",
    "optimizer",
    "loss",
    "penalty",
    "hidden",
    "preset",
    "clip",
    "seed",
)
"""Parameters named like their flag; renamed only where a message judges them."""


def _as_flags(message):
    """Name command-line flags where a library message names keywords."""
    for keyword, flag in _FLAG_NAMES.items():
        message = message.replace(keyword, flag)
    for name, flag in _PARAM_FLAGS.items():
        # whole words only: "n_epochs=3" reads "--epochs 3"; "x_lr_decay" stays
        message = re.sub(rf"(?<![\w-]){name}=", f"{flag} ", message)
        message = re.sub(rf"(?<![\w-]){name}\b", flag, message)
    for name in _SAME_NAME_FLAGS:
        # "l2 must be" reads "--l2 must be"; "the loss is" stays as it is
        flag = "--" + name.replace("_", "-")
        message = re.sub(rf"(?<![\w-]){name}(?= must| cannot|=)", flag, message)
    return message


def main(argv=None):
    """Run the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (``sys.argv[1:]`` when None).

    Returns
    -------
    int
        Exit status: 0 on success, 2 on a user error, 1 when training
        diverged.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.debug:
        return args.func(args)
    from npmf.io import ModelFileError
    from npmf.train import TrainingDivergedError

    try:
        return args.func(args)
    except TrainingDivergedError as err:
        print(
            f"npmf: error: training diverged: {err}; no model written", file=sys.stderr
        )
        return 1
    except BrokenPipeError:
        # the reader (e.g. head) closed the pipe: not an error of ours
        sys.stderr.close()
        return 0
    except MemoryError as err:
        print(
            f"npmf: error: out of memory ({err}); use a smaller --factors, "
            f"--hidden or --batch-size",
            file=sys.stderr,
        )
        return 2
    except OSError as err:
        what = err.strerror or str(err)
        where = f": {err.filename}" if err.filename else ""
        print(f"npmf: error: {what}{where}", file=sys.stderr)
        return 2
    except (
        UsageError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        ModelFileError,
    ) as err:
        print(f"npmf: error: {_as_flags(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("npmf: interrupted; earlier outputs left as they were", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
