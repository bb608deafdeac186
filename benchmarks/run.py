"""Benchmark runner: npmf against Keras, Surprise and Cornac, and across sizes.

    python -m benchmarks [--quick] [--threads N] [--out DIR]
    python benchmarks/run.py [--quick] ...

Every measurement runs in its own process (:mod:`benchmarks.worker`) so
imports, thread pools and peak memory do not leak between implementations.
Each reports the median seconds per epoch after a warm-up epoch, its final
test RMSE and peak RSS. The full run writes ``results.json`` and
``results.md`` next to this file; ``--quick`` (a CI smoke run, well under two
minutes) writes to a temporary directory unless ``--out`` is given.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

TUTORIAL = {
    "mf": dict(k=200, batch_size=256, optimizer="sgd"),
    "deep-linear": dict(k=200, batch_size=512, optimizer="sgd"),
    "deep-relu": dict(k=200, batch_size=512, optimizer="sgd"),
}


ROUNDS = 3
"""Turns of npmf and Keras on :data:`ROUND_MODELS`, pooled by :func:`pool_rounds`."""

ROUND_MODELS = ("mf", "deep-linear", "deep-relu")
"""The tutorial models, whose npmf and Keras runs take turns."""


def plan(quick, threads):
    """List the measurements as worker specs."""
    mf_epochs, deep_epochs = (2, 2) if quick else (10, 3)
    runs = []

    # tutorial models on the ml-100k tutorial split
    for model, settings in TUTORIAL.items():
        epochs = mf_epochs if model == "mf" else deep_epochs
        base = dict(model=model, dataset="ml-100k", epochs=epochs, **settings)
        if quick and model != "mf":
            # NOTE: a fifth of the training set keeps the smoke run short
            base["train_fraction"] = 0.2
        last = {}  # the round tag of the npmf and Keras runs below
        if model in ROUND_MODELS and not quick:
            # NOTE: the host has slow spells of seconds to minutes (the same
            # npmf deep-relu epoch took 3.7 s in one full run and 4.8 s in the
            # next), which one process per side can fall into; npmf and Keras
            # take turns in ROUNDS processes each, and their epochs are pooled
            for n in range(1, ROUNDS):
                runs.append(dict(base, impl="npmf", engine="auto", round=n))
                runs.append(dict(base, impl="keras", round=n))
            last = {"round": ROUNDS}
        runs.append(dict(base, impl="npmf", engine="auto", **last))
        if model == "deep-relu" and threads > 1 and not quick:
            # NOTE: GEMM-bound; OpenBLAS threads suffer most on a busy machine
            runs.append(dict(base, impl="npmf", engine="auto", threads=1))
        if not (quick and model == "deep-relu"):
            runs.append(dict(base, impl="keras", **last))
        if not quick and model != "deep-relu":
            runs.append(dict(base, impl="npmf", engine="reference"))
    if not quick:
        # Adamax is dense by definition: every row moves every step
        base = dict(
            model="mf",
            dataset="ml-100k",
            epochs=4,
            k=200,
            batch_size=256,
            optimizer="adamax",
        )
        for impl, engine in (("npmf", "auto"), ("keras", None), ("npmf", "reference")):
            runs.append(dict(base, impl=impl, **({"engine": engine} if engine else {})))
    for impl in ("surprise", "cornac"):
        runs.append(
            dict(
                impl=impl,
                model="mf",
                dataset="ml-100k",
                k=200,
                epochs=mf_epochs,
                batch_size=256,
                optimizer="sgd",
            )
        )
    for n in sorted({1, threads}):
        runs.append(
            dict(
                impl="gemm",
                model="gemm",
                dataset="-",
                k=200,
                batch_size=512,
                epochs=0,
                threads=n,
            )
        )

    # npmf MF across synthetic sizes (a part of the ML-25M epoch, scaled),
    # then ML-25M-sized tables with a twenty-fifth and two fifths of its
    # ratings: time against ratings with the table size held fixed
    sizes = (
        [("ml-1m", 2, 1.0, 1.0)]
        if quick
        else [
            ("ml-1m", 3, 1.0, 1.0),
            ("ml-10m", 2, 1.0, 1.0),
            ("ml-25m", 2, 0.2, 1.0),
            ("ml-25m", 2, 1.0, 0.04),
            ("ml-25m", 2, 0.5, 0.4),
        ]
    )
    for name, epochs, fraction, data_fraction in sizes:
        runs.append(
            dict(
                impl="synthetic",
                model="mf",
                dataset=name,
                k=200,
                batch_size=256,
                optimizer="sgd",
                epochs=epochs,
                epoch_fraction=fraction,
                data_fraction=data_fraction,
            )
        )
    return runs


def run_one(spec, threads, timeout):
    """Run one measurement in a subprocess; returns its result dict."""
    spec = dict(spec, threads=spec.get("threads", threads))
    cmd = [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return dict(spec, error=f"timed out after {timeout} s")
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(spec, wall_s=wall, **json.loads(line[len("RESULT ") :]))
    return dict(spec, error=_error_line(proc.stderr, proc.returncode))


def _error_line(stderr, returncode):
    """One line saying why a worker failed, from its stderr and exit code.

    The last line naming an error, not whatever a crashing library printed
    last (a native stack frame, say); a missing module as "not installed".
    """
    lines = stderr.strip().splitlines()
    named = [line for line in lines if "Error" in line or "error:" in line]
    tail = (named or lines or ["no output"])[-1].strip()
    if "ModuleNotFoundError" in stderr and "'" in tail:
        return "not installed: " + tail.split("'")[-2]
    return f"exit {returncode}: {tail}"


def machine_info(threads):
    """CPU, cores, BLAS, library versions and load, for the header."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                line.split(":", 1)[1].strip()
                for line in f
                if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    import numpy  # noqa: F401  (loads the BLAS threadpoolctl reports)
    from threadpoolctl import threadpool_info

    blas = [
        f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')}, "
        f"{p.get('num_threads')} threads by default)"
        for p in threadpool_info()
        if p.get("user_api") == "blas"
    ]
    versions = {}
    for name in (
        "numpy",
        "scipy",
        "tensorflow-cpu",
        "keras",
        "scikit-surprise",
        "cornac",
        "threadpoolctl",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "blas": blas,
        "versions": versions,
        "threads": threads,
        "load_average_start": os.getloadavg(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def pool_rounds(results):
    """Merge the results of one spec measured in several rounds.

    Each round's warm-up epochs are dropped and the rest pooled: the merged
    result's median is over every timed epoch of every round, its peak RSS
    the largest, and ``round_medians`` keeps each round's own median.
    """
    merged, order = {}, []
    for r in results:
        if "round" not in r:
            order.append(r)
            continue
        key = json.dumps({k: v for k, v in r.items() if k in SPEC_KEYS}, sort_keys=True)
        if key not in merged:
            merged[key] = []
            order.append(key)
        merged[key].append(r)
    return [_pool(merged[x]) if isinstance(x, str) else x for x in order]


SPEC_KEYS = ("impl", "model", "dataset", "epochs", "engine", "threads", "optimizer")


def _pool(rounds):
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return rounds[-1]
    warm = ok[0].get("warmup", 1)
    out = dict(ok[-1], rounds=len(ok))
    out.pop("round", None)
    medians = {"times": "median_s_per_epoch", "cpu_times": "median_cpu_s_per_epoch"}
    for key in ("times", "cpu_times", "gflops_per_epoch"):
        pooled = [t for r in ok for t in r.get(key, [])[warm:]]
        out[key] = pooled
        if key in medians:
            out[medians[key]] = float(np.median(pooled)) if pooled else None
    out["warmup"] = 0
    out["round_medians"] = [r["median_s_per_epoch"] for r in ok]
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
    return out


def _rounds_note(results):
    """The paragraph on the pooled rounds, when the run had any."""
    pooled = [r for r in results if r.get("round_medians")]
    if not pooled:
        return []
    medians = "; ".join(
        f"{_key(r)} {r['impl']} {', '.join(_fmt(m, 3) for m in r['round_medians'])} s"
        for r in pooled
    )
    return [
        f"On the tutorial models ({', '.join(ROUND_MODELS)}) npmf and Keras take "
        f"turns, {ROUNDS} processes each; their timed epochs are pooled (medians "
        f"of the single rounds: {medians}).",
        "",
    ]


def _fmt(x, digits=3):
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def _key(r):
    """Model name, with the optimizer when it is not the tutorial's SGD."""
    optimizer = r.get("optimizer", "sgd")
    return r["model"] if optimizer == "sgd" else f"{r['model']} ({optimizer})"


def summarise(results, info):
    """Add speedups and the target checks; return the Markdown report."""
    keras = {_key(r): r for r in results if r["impl"] == "keras" and "error" not in r}
    for r in results:
        if r["impl"] in ("npmf", "surprise", "cornac") and _key(r) in keras:
            if "error" not in r:
                ref = keras[_key(r)]
                r["speedup_vs_keras"] = (
                    ref["median_s_per_epoch"] / r["median_s_per_epoch"]
                )
                if r.get("median_cpu_s_per_epoch") and ref.get(
                    "median_cpu_s_per_epoch"
                ):
                    r["cpu_speedup_vs_keras"] = (
                        ref["median_cpu_s_per_epoch"] / r["median_cpu_s_per_epoch"]
                    )
    gemm = {
        r["threads"]: r["gflops"]
        for r in results
        if r["impl"] == "gemm" and "error" not in r
    }

    lines = [
        "# npmf benchmarks",
        "",
        f"- machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}",
        f"- BLAS: {'; '.join(info['blas'])}; benchmark threads: {info['threads']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- date {info['date']}; load average at start "
        f"{' '.join(f'{x:.1f}' for x in info['load_average_start'])}, at end "
        f"{' '.join(f'{x:.1f}' for x in info['load_average_end'])}",
        "- float32 GEMM rate at the deep model's shapes: "
        + (
            ", ".join(f"{_fmt(v)} GFLOP/s with {t} thread(s)" for t, v in gemm.items())
            or "not measured in this run"
        ),
        "",
        "Median seconds per epoch (wall clock) after one warm-up epoch; RMSE on "
        "the ml-100k tutorial test split after the listed epochs; peak RSS of "
        "the measuring process. CPU s/epoch is the process CPU time (all its "
        "threads): on a busy machine it shows the work done, where wall time "
        "also counts waiting for a core.",
        "",
        *_rounds_note(results),
        "| model | implementation | epochs | median s/epoch | final RMSE | "
        "peak RSS MB | speedup_vs_keras | CPU s/epoch | CPU speedup_vs_keras |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["impl"] in ("synthetic", "gemm"):
            continue
        name = r["impl"] + (f" ({r['engine']})" if r["impl"] == "npmf" else "")
        if r["threads"] != info["threads"]:
            name += f", {r['threads']} thread{'s' if r['threads'] > 1 else ''}"
        if "error" in r:
            lines.append(f"| {_key(r)} | {name} | - | {r['error']} |" + " - |" * 5)
            continue
        note = " (fit mean)" if r.get("note") else ""
        if r.get("rounds"):
            name += f", {r['rounds']} rounds"
        if r.get("train_fraction", 1.0) < 1.0:
            name += f", {r['train_fraction']:.0%} of train"
        lines.append(
            f"| {_key(r)} | {name} | {r['epochs']} | "
            f"{_fmt(r['median_s_per_epoch'], 4)}{note} | {_fmt(r.get('rmse'), 4)} | "
            f"{r['peak_rss_mb']:.0f} | {_fmt(r.get('speedup_vs_keras'))} | "
            f"{_fmt(r.get('median_cpu_s_per_epoch'), 4)} | "
            f"{_fmt(r.get('cpu_speedup_vs_keras'))} |"
        )
    lines += _scaling_table(results)
    lines += _targets(results, gemm, quick=info.get("quick", False))
    return "\n".join(lines) + "\n"


def _scaling_table(results):
    rows = [r for r in results if r["impl"] == "synthetic"]
    if not rows:
        return []
    lines = [
        "",
        "## npmf MF (k 200, batch 256, SGD) on synthetic MovieLens shapes",
        "",
        "| dataset | ratings | users | items | timed part of epoch | s/epoch | "
        "us/rating | peak RSS MB (whole run) | training peak RSS MB | "
        "data+params+state MB | (training peak - baseline) / "
        "(data+params+state) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['error']} |" + " - |" * 9)
            continue
        r["us_per_rating"] = r["median_s_per_epoch"] / r["n_ratings"] * 1e6
        r["memory_ratio"] = _memory_ratio(r)
        lines.append(
            f"| {r['dataset']} | {r['n_ratings']:,} | {r['n_users']:,} | "
            f"{r['n_items']:,} | {r['epoch_fraction']:.0%} | "
            f"{_fmt(r['median_s_per_epoch'])} | {r['us_per_rating']:.3f} | "
            f"{r['peak_rss_mb']:.0f} | {r.get('train_peak_rss_mb', 0):.0f} | "
            f"{r['data_params_state_mb']:.0f} | {r['memory_ratio']:.2f} |"
        )
    return lines


def _targets(results, gemm, quick=False):
    def get(model, impl="npmf", engine="auto"):
        for r in results:
            if (
                r["model"] == model
                and r["impl"] == impl
                and "error" not in r
                and r.get("engine", engine) == engine
            ):
                return r
        return None

    lines = ["", "## Targets (issue #5)", ""]
    if quick:
        lines += [
            "Quick run (`--quick`): one timed epoch on part of the data, a smoke "
            "test of the runner. The verdicts below are the full run's targets "
            "applied to it and change with the host's noise; the committed "
            "verdicts come from `python -m benchmarks`.",
            "",
        ]
    npmf_rows = [
        r
        for r in results
        if r["impl"] == "npmf" and r.get("engine") == "auto" and "error" not in r
    ]
    # the speed targets are for the whole machine, as Keras runs on it
    full = max((r["threads"] for r in npmf_rows), default=1)
    for model, need in (("mf", 30), ("deep-linear", 50), ("deep-relu", 1.5)):
        for r in (r for r in npmf_rows if _key(r) == model):
            if "speedup_vs_keras" not in r:
                continue
            ok = "met" if r["speedup_vs_keras"] >= need else "NOT met"
            if r["threads"] < full:
                ok = f"for information only, Keras had {full} threads"
            lines.append(
                f"- {model} (npmf {r['threads']} thread(s)): "
                f"{r['speedup_vs_keras']:.1f}x faster than Keras (target >= {need}x): "
                f"{ok}; by CPU time {_fmt(r.get('cpu_speedup_vs_keras'))}x"
            )
    for relu in (r for r in npmf_rows if _key(r) == "deep-relu"):
        k = relu["k"]
        widths = (2 * k + 2, 2048, 256, 1)
        macs = sum(a * c for a, c in zip(widths[:-1], widths[1:]))
        # forward, weight gradients and input gradients: 3 GEMMs of 2 FLOPs
        flops = 6 * macs * relu.get("n_train", 80_000)
        # each timed epoch against the GEMM rate measured just before it
        warm = relu.get("warmup", 1)
        rates = relu.get("gflops_per_epoch", [])[warm:]
        ratios = [t * g * 1e9 / flops for t, g in zip(relu["times"][warm:], rates)]
        if not ratios:
            continue
        ratio, rate = float(np.median(ratios)), float(np.median(rates))
        relu["gemm_bound_ratio"] = ratio
        lines.append(
            f"- deep-relu (npmf {relu['threads']} thread(s)): {flops / 1e9:.0f} "
            f"GFLOP/epoch at the rate measured before each epoch (median "
            f"{rate:.0f} GFLOP/s, bound {flops / rate / 1e9:.2f} s); npmf takes "
            f"{ratio:.2f}x that (target <= 1.3x): "
            f"{'met' if ratio <= 1.3 else 'NOT met'}"
        )
    rows = [r for r in results if r["impl"] == "synthetic" and "error" not in r]
    lines += _scaling_targets(rows)
    for r in rows:
        ratio = _memory_ratio(r)
        lines.append(
            f"- {r['dataset']} training memory: {ratio:.2f}x data+params+state "
            f"(target <= 1.5x): {'met' if ratio <= 1.5 else 'NOT met'}"
        )
    return lines


def _growth(rows):
    """Ratings, us per rating and the exponent ``b`` of time ~ ratings ** b."""
    n = np.array([r["n_ratings"] for r in rows], dtype=float)
    t = np.array([r["median_s_per_epoch"] for r in rows])
    # b = 1 is linear
    b = float(np.polyfit(np.log(n), np.log(t), 1)[0])
    return n, t / n * 1e6, b


def _scaling_targets(rows):
    """Growth of epoch time with ratings, across shapes and at fixed tables."""
    lines = []
    shapes = [r for r in rows if r.get("data_fraction", 1.0) == 1.0]
    if len(shapes) > 1:
        _, per, b = _growth(shapes)
        lines.append(
            f"- time per rating across the MovieLens shapes: "
            f"{', '.join(f'{p:.3f}' for p in per)} us (spread "
            f"{per.max() / per.min():.2f}x); epoch time grows as ratings^{b:.2f}"
        )
    by_tables = {}
    for r in rows:
        by_tables.setdefault((r["n_users"], r["n_items"]), []).append(r)
    for (n_users, n_items), same in by_tables.items():
        if len(same) < 2:
            continue
        n, per, b = _growth(sorted(same, key=lambda r: r["n_ratings"]))
        lines.append(
            f"- fixed tables ({n_users:,} users x {n_items:,} items), "
            f"{', '.join(f'{x / 1e6:.0f}M' for x in n)} ratings: "
            f"{', '.join(f'{p:.3f}' for p in per)} us per rating; epoch time "
            f"grows as ratings^{b:.2f} (target: linear, exponent 1)"
        )
    return lines


def _memory_ratio(r):
    """(training peak RSS - RSS before the data) / (data + params + state)."""
    peak = r.get("train_peak_rss_mb", r["peak_rss_mb"])
    return (peak - r["baseline_rss_mb"]) / r["data_params_state_mb"]


def _implementations():
    """Names ``--only`` takes: the workers of :mod:`benchmarks.worker`."""
    # NOTE: imported here: ``python benchmarks/run.py`` puts the repository
    # on sys.path only when it starts main()
    from benchmarks.worker import RUNNERS

    return tuple(RUNNERS)


def _threads(text):
    """argparse type of ``--threads``: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of threads, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 thread, got {value}")
    return value


def _only(text):
    """argparse type of ``--only``: known implementation names, comma separated."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = _implementations()
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown implementation(s) {', '.join(map(repr, unknown)) or repr(text)}; "
            f"expected a comma-separated subset of {', '.join(known)}"
        )
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="npmf benchmarks"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: few epochs, small synthetic data",
    )
    parser.add_argument(
        "--threads",
        type=_threads,
        default=os.cpu_count(),
        help="BLAS / TensorFlow threads per process (default: the CPU count)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for results.json and results.md (default: benchmarks/ "
        "for a full run, a new temporary directory with --quick or --only)",
    )
    parser.add_argument(
        "--only",
        type=_only,
        default=None,
        help=f"comma-separated implementations to run: {', '.join(_implementations())}",
    )
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        # NOTE: checked before the runs, which take minutes, not after them
        parser.error(f"--out {args.out} is a file; expected a directory")
    # NOTE: benchmarks/results.* are the committed full run's; a quick or
    # partial run writes elsewhere unless told to
    partial = args.quick or args.only is not None
    out = args.out or (
        Path(tempfile.mkdtemp(prefix="npmf-bench-")) if partial else HERE
    )
    info = machine_info(args.threads)
    info["quick"] = args.quick
    timeout = 600 if args.quick else 1800
    results = []
    for spec in plan(args.quick, args.threads):
        if args.only and spec["impl"] not in args.only:
            continue
        result = run_one(spec, args.threads, timeout)
        results.append(result)
        status = result.get("error") or f"{_fmt(result.get('median_s_per_epoch'))} s"
        print(
            f"{spec['impl']:9s} {spec['model']:11s} {spec['dataset']:8s} "
            f"{spec.get('engine', ''):9s} {status}",
            flush=True,
        )
    info["load_average_end"] = os.getloadavg()
    results = pool_rounds(results)
    report = summarise(results, info)
    out.mkdir(parents=True, exist_ok=True)
    from npmf.io import atomic_path

    # each file whole or not at all: a run cut short leaves the last results
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(report)
    print(report)
    print(f"wrote {out / 'results.md'}")


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(REPO))
    main()
