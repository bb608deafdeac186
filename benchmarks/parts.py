"""Where a deep-model step's time goes, on the ml-100k tutorial split.

    python -m benchmarks.parts [--steps N] [--out FILE]

Two measurements behind the README's account of the deep targets:

- relu, 2048-256, batch 512: seconds per step of the fast SGD path
  (:func:`npmf.train.run_epoch` on the first ``N`` batches of an epoch)
  against the time of the step's matrix products alone, each GEMM of
  :class:`npmf.fast.kernels.DeepBatchedKernel` run on arrays of the same
  shapes (the batch's real counts of distinct users and items) with the BLAS
  default threads. The difference is what the step spends outside BLAS; the
  two are timed in turns, pass after pass, so the host's slow spells fall
  on both.
- linear: the four matrix-vector products of a
  :class:`npmf.fast.kernels.DeepLinearKernel` step (``W1`` and ``W2``, each
  both ways) with one and with two BLAS threads.

Each figure is the median of ``--repeats`` passes; the Markdown summary is
written to ``--out`` (default ``benchmarks/parts.md``) through a temporary
file.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

F32 = np.float32
K, HIDDEN, BATCH = 200, (2048, 256), 512


def _gemm_shapes(n_uq, n_iq):
    """``(m, k, n)`` of every matrix product of one relu step."""
    k1, (h1, h2), b = K + 1, HIDDEN, BATCH
    return [
        # forward: (s x~) Wu, (s x~) Wi; a1 W2
        (n_uq, k1, h1),
        (n_iq, k1, h1),
        (b, h1, h2),
        # backward: a1.T dz2, dz2 W2.T; x~.T Du, x~.T Di; Du W1P.T, Di W1Q.T
        (h1, b, h2),
        (b, h2, h1),
        (K, n_uq, h1),
        (K, n_iq, h1),
        (n_uq, h1, K),
        (n_iq, h1, K),
    ]


def _time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def relu_parts(steps, repeats):
    """Seconds per step: the whole fast step and its GEMMs alone."""
    from benchmarks.worker import epoch_orders, init_params, tutorial_data
    from npmf.fast.batching import epoch_batches
    from npmf.losses import get_loss
    from npmf.optim import make_optimizer
    from npmf.train import run_epoch

    (u, i, y), _, n_users, n_items, mu = tutorial_data()
    r = (y - mu).astype(F32)  # (n_train,)
    order = epoch_orders(len(r), 1)[0][: steps * BATCH]  # (steps * batch,)
    core, params = init_params("deep-relu", n_users, n_items, K)
    opt = make_optimizer("sgd", None)

    def epoch():
        run_epoch(
            core,
            params,
            opt,
            u,
            i,
            r,
            batch_size=BATCH,
            loss_fn=get_loss("rmse"),
            l2=0.01,
            order=order,
            engine="auto",
        )

    # the same products on random arrays of each batch's shapes
    rng = np.random.default_rng(0)
    counts = [
        (len(batch.uq), len(batch.iq))
        for batch in epoch_batches(u, i, r, order, BATCH, n_users, n_items)
    ]
    operands = {}
    for m, kk, n in {s for c in counts for s in _gemm_shapes(*c)}:
        a = rng.standard_normal((m, kk)).astype(F32)  # (m, kk)
        b = rng.standard_normal((kk, n)).astype(F32)  # (kk, n)
        c = np.empty((m, n), dtype=F32)  # (m, n)
        operands[(m, kk, n)] = (a, b, c)

    def gemms():
        # into kept outputs, as the kernel writes its products
        for c in counts:
            for shape in _gemm_shapes(*c):
                np.matmul(*operands[shape])

    # NOTE: the steps and their GEMMs alone are timed in turns, pass after
    # pass, so a slow spell of the host falls on both; "the rest" is the
    # median of the passes' differences
    epoch()
    gemms()  # warm-up
    step, gemm = [], []
    for _ in range(repeats):
        for fn, times in ((epoch, step), (gemms, gemm)):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) / steps)
    mean_uq, mean_iq = np.mean(counts, axis=0)
    return {
        "step_s": float(np.median(step)),
        "gemm_s": float(np.median(gemm)),
        "rest_s": float(np.median(np.subtract(step, gemm))),
        "mean_distinct_users": float(mean_uq),
        "mean_distinct_items": float(mean_iq),
    }


def linear_parts(repeats):
    """Seconds of one step's four matrix-vector products, per thread count."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    W1 = rng.standard_normal((2 * K + 2, HIDDEN[0])).astype(F32)  # (2k + 2, h1)
    W2 = rng.standard_normal(HIDDEN).astype(F32)  # (h1, h2)
    v2 = rng.standard_normal(HIDDEN[0]).astype(F32)  # (h1,)
    v3 = rng.standard_normal(HIDDEN[1]).astype(F32)  # (h2,)
    g0 = rng.standard_normal(2 * K + 2).astype(F32)  # (2k + 2,)

    def four():
        W1 @ v2, W2 @ v3, g0 @ W1, v2 @ W2

    out = {}
    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            # 100 steps a pass, for a pass long enough to time
            out[threads] = _time(lambda: [four() for _ in range(100)], repeats) / 100
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.parts",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=40, help="relu steps timed")
    parser.add_argument("--repeats", type=int, default=5, help="passes per figure")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "benchmarks" / "parts.md",
        help="Markdown file the summary is written to",
    )
    args = parser.parse_args(argv)
    for name in ("steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.out.is_dir():
        # NOTE: checked before the measurements, not when writing after them
        parser.error(f"--out {args.out} is a directory; expected a file name")

    relu = relu_parts(args.steps, args.repeats)
    linear = linear_parts(args.repeats)
    rest = relu["rest_s"]
    lines = [
        "# Where a deep-model step's time goes",
        "",
        f"`python -m benchmarks.parts --steps {args.steps} --repeats {args.repeats}`, "
        f"{time.strftime('%Y-%m-%dT%H:%M:%S')}, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end.",
        "",
        f"- relu 2048-256, batch {BATCH}, SGD fast path: "
        f"{relu['step_s'] * 1e3:.1f} ms a step; its GEMMs alone "
        f"{relu['gemm_s'] * 1e3:.1f} ms; the rest {rest * 1e3:.1f} ms "
        f"(medians of {args.repeats} passes of each, timed in turns; distinct "
        f"users {relu['mean_distinct_users']:.0f}, items "
        f"{relu['mean_distinct_items']:.0f} of {BATCH} per batch)",
        f"- linear: a step's four matrix-vector products take "
        f"{linear[1] * 1e6:.0f} us on 1 BLAS thread, "
        f"{linear[2] * 1e6:.0f} us on 2",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    from npmf.io import atomic_path

    with atomic_path(args.out) as tmp:
        tmp.write_text(text)


if __name__ == "__main__":
    main()
