"""One benchmark measurement, run in its own process by :mod:`benchmarks.run`.

    python -m benchmarks.worker '{"impl": "npmf", "model": "mf", ...}'

prints one JSON line: median seconds per epoch after the warm-up epoch(s),
every epoch's time, final test RMSE, peak RSS, and for the scaling runs the
bytes of ratings + parameters + optimizer state.
"""

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

L2, SEED = 0.01, 0
HIDDEN = (2048, 256)


def peak_rss_mb():
    """Peak resident set size of this process so far, in MB (Linux KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb():
    """Current resident set size in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss():
    """Reset the kernel's peak-RSS mark of this process (Linux ``clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # pragma: no cover - not Linux, or not allowed
        pass


def current_peak_rss_mb():
    """Peak RSS since the last :func:`reset_peak_rss`, in MB (``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return peak_rss_mb()  # pragma: no cover


def data_dir():
    return Path(os.environ.get("NPMF_DATA", REPO.parent / "shared" / "data"))


def tutorial_data():
    """ml-100k tutorial split as contiguous indices and centred targets."""
    try:
        from npmf.data import load_dataset, tutorial_split

        df = load_dataset("ml-100k", data_dir())
        train, test = tutorial_split(df)
    except ImportError:  # pragma: no cover - before npmf.data existed
        import pandas as pd
        from sklearn.model_selection import train_test_split

        path = data_dir() / "ml-100k" / "u.data"
        df = pd.read_csv(path, sep="\t", names=["user", "item", "rating", "ts"])
        train, test = train_test_split(df, test_size=0.2, random_state=2021)
    # the tutorial sizes the tables from every id in the file
    users = np.unique(df["user"].to_numpy())
    items = np.unique(df["item"].to_numpy())
    mu = float(train["rating"].mean())

    def encode(part):
        u = np.searchsorted(users, part["user"].to_numpy()).astype(np.int32)
        i = np.searchsorted(items, part["item"].to_numpy()).astype(np.int32)
        return u, i, part["rating"].to_numpy(dtype=np.float64)

    return encode(train), encode(test), len(users), len(items), mu


def epoch_orders(n, n_epochs):
    rng = np.random.default_rng(SEED + 1)
    return [rng.permutation(n) for _ in range(n_epochs)]


def init_params(model, n_users, n_items, k):
    from npmf.models import mf, mlp

    rng = np.random.default_rng(SEED)
    if model == "mf":
        return mf, mf.init_params(n_users, n_items, k, rng)
    params = mlp.init_params(n_users, n_items, k, HIDDEN, rng)
    return mlp.make(model.split("-")[1]), params


def train_part(data, spec):
    """Keep the first ``train_fraction`` of the training set (quick runs)."""
    (u, i, y), test, n_users, n_items, mu = data
    n = max(spec["batch_size"], int(len(y) * spec.get("train_fraction", 1.0)))
    return (u[:n], i[:n], y[:n]), test, n_users, n_items, mu


def run_npmf(spec):
    from npmf.losses import get_loss
    from npmf.optim import make_optimizer
    from npmf.train import predict_batches, run_epoch

    (u, i, y), (tu, ti, ty), n_users, n_items, mu = train_part(tutorial_data(), spec)
    r = (y - mu).astype(np.float32)
    core, params = init_params(spec["model"], n_users, n_items, spec["k"])
    opt = make_optimizer(spec["optimizer"], spec.get("learning_rate"))
    times, cpu, losses, gflops = [], [], [], []
    for order in epoch_orders(len(r), spec["epochs"]):
        if spec["model"] == "deep-relu":
            # NOTE: the GEMM rate right before each epoch, so a busy machine
            # slows the bound and the epoch alike
            gflops.append(run_gemm(spec)["gflops"])
        t0, c0 = time.perf_counter(), time.process_time()
        losses.append(
            run_epoch(
                core,
                params,
                opt,
                u,
                i,
                r,
                batch_size=spec["batch_size"],
                loss_fn=get_loss("rmse"),
                l2=L2,
                order=order,
                engine=spec.get("engine", "auto"),
            )
        )
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    pred = predict_batches(core, params, tu, ti) + mu
    rmse = float(np.sqrt(np.mean((pred - ty) ** 2)))
    return {
        "times": times,
        "cpu_times": cpu,
        "rmse": rmse,
        "losses": losses,
        "n_train": len(r),
        "gflops_per_epoch": gflops,
    }


def run_keras(spec):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(spec["threads"])
    import keras

    from reference import keras_models

    (u, i, y), (tu, ti, ty), n_users, n_items, mu = train_part(tutorial_data(), spec)
    r = (y - mu).astype(np.float32)
    keras.utils.set_random_seed(SEED)
    _, params = init_params(spec["model"], n_users, n_items, spec["k"])
    common = dict(
        l2=L2,
        loss="rmse",
        optimizer=spec["optimizer"],
        learning_rate=spec.get("learning_rate"),
    )
    if spec["model"] == "mf":
        model = keras_models.build_mf(n_users, n_items, spec["k"], **common)
    else:
        model = keras_models.build_deep(
            n_users,
            n_items,
            spec["k"],
            hidden=HIDDEN,
            activation=spec["model"].split("-")[1],
            **common,
        )
    # same initial weights and the same batch order as the npmf run
    keras_models.to_keras_weights(model, params)
    times, cpu, losses = [], [], []
    for order in epoch_orders(len(r), spec["epochs"]):
        t0, c0 = time.perf_counter(), time.process_time()
        hist = model.fit(
            [u[order], i[order]],
            r[order],
            batch_size=spec["batch_size"],
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        losses.append(float(hist.history["loss"][0]))
    pred = model.predict([tu, ti], batch_size=8192, verbose=0)[:, 0] + mu
    rmse = float(np.sqrt(np.mean((pred - ty) ** 2)))
    return {"times": times, "cpu_times": cpu, "rmse": rmse, "losses": losses}


def run_surprise(spec):
    import pandas as pd
    from surprise import SVD, Dataset, Reader

    (u, i, y), (tu, ti, ty), _, _, _ = tutorial_data()
    frame = pd.DataFrame({"user": u, "item": i, "rating": y})
    data = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5)))
    trainset = data.build_full_trainset()
    # NOTE: Surprise has no per-epoch hook; time one fit of n epochs and
    # report the mean (the warm-up is a separate 1-epoch fit)
    SVD(n_factors=spec["k"], n_epochs=1, random_state=SEED).fit(trainset)
    algo = SVD(n_factors=spec["k"], n_epochs=spec["epochs"], random_state=SEED)
    t0 = time.perf_counter()
    algo.fit(trainset)
    per_epoch = (time.perf_counter() - t0) / spec["epochs"]
    pred = np.array([algo.predict(a, b).est for a, b in zip(tu, ti)])
    rmse = float(np.sqrt(np.mean((pred - ty) ** 2)))
    return {"times": [per_epoch], "rmse": rmse, "note": "mean of one fit"}


def run_cornac(spec):
    import cornac

    (u, i, y), (tu, ti, ty), _, _, mu = tutorial_data()
    triples = list(zip(u.tolist(), i.tolist(), y.tolist()))
    train = cornac.data.Dataset.from_uir(triples, seed=SEED)

    def fit(n_iter):
        model = cornac.models.MF(
            k=spec["k"],
            max_iter=n_iter,
            learning_rate=0.01,
            lambda_reg=0.02,
            use_bias=True,
            early_stop=False,
            num_threads=spec["threads"],
            seed=SEED,
        )
        t0 = time.perf_counter()
        model.fit(train)
        return model, time.perf_counter() - t0

    fit(1)  # warm-up
    model, seconds = fit(spec["epochs"])
    # ids unseen in training fall back to the global mean
    pred = np.full(len(ty), mu)
    for n, (a, b) in enumerate(zip(tu.tolist(), ti.tolist())):
        ua, ib = train.uid_map.get(a), train.iid_map.get(b)
        if ua is not None and ib is not None:
            pred[n] = model.score(ua, ib)
    rmse = float(np.sqrt(np.mean((np.clip(pred, 1, 5) - ty) ** 2)))
    return {
        "times": [seconds / spec["epochs"]],
        "rmse": rmse,
        "note": "mean of one fit",
    }


def run_synthetic(spec):
    from benchmarks.synthetic import make_ratings
    from npmf.fast.batching import _coo_kernel
    from npmf.losses import get_loss
    from npmf.optim import make_optimizer
    from npmf.train import permutation, run_epoch

    _coo_kernel()  # load scipy's kernel before the baseline, as code, not data
    base = rss_mb()
    u, i, r, n_users, n_items = make_ratings(
        spec["dataset"], SEED, spec.get("data_fraction", 1.0)
    )
    n = len(r)
    core, params = init_params("mf", n_users, n_items, spec["k"])
    opt = make_optimizer(spec["optimizer"])
    # NOTE: initialisation draws float64 then casts (npmf.models.mf), a
    # one-off peak; reset the high-water mark to see training's own peak
    setup_peak = peak_rss_mb()
    reset_peak_rss()
    # time `epoch_fraction` of an epoch on the full-size data and tables
    n_run = max(spec["batch_size"], int(n * spec.get("epoch_fraction", 1.0)))
    rng = np.random.default_rng(SEED + 1)
    times = []
    for _ in range(spec["epochs"]):
        order = permutation(rng, n)  # (n,) int32, as fit_loop draws it
        t0 = time.perf_counter()
        run_epoch(
            core,
            params,
            opt,
            u,
            i,
            r,
            order=order[:n_run],
            batch_size=spec["batch_size"],
            loss_fn=get_loss("rmse"),
            l2=L2,
        )
        times.append((time.perf_counter() - t0) * n / n_run)
        del order
    state = sum(a.nbytes for a in getattr(opt, "m", {}).values())
    state += sum(a.nbytes for a in getattr(opt, "v", {}).values())
    model_mb = (
        u.nbytes + i.nbytes + r.nbytes + sum(W.nbytes for W in params.values()) + state
    ) / 2**20
    return {
        "times": times,
        "train_peak_rss_mb": current_peak_rss_mb(),
        "setup_peak_rss_mb": setup_peak,
        "n_ratings": n,
        "n_users": n_users,
        "n_items": n_items,
        "baseline_rss_mb": base,
        "data_params_state_mb": model_mb,
        "epoch_fraction": n_run / n,
    }


def run_gemm(spec):
    """float32 GEMM rate at the deep model's shapes (GFLOP/s)."""
    best = 0.0
    rng = np.random.default_rng(0)
    b, widths = spec["batch_size"], (2 * spec["k"] + 2, *HIDDEN)
    shapes = [(b, fi, fo) for fi, fo in zip(widths[:-1], widths[1:])]
    for m, kk, nn in shapes:
        a = rng.standard_normal((m, kk)).astype(np.float32)
        w = rng.standard_normal((kk, nn)).astype(np.float32)
        a @ w
        t0 = time.perf_counter()
        reps = 10
        for _ in range(reps):
            a @ w
        seconds = (time.perf_counter() - t0) / reps
        best = max(best, 2 * m * kk * nn / seconds / 1e9)
    return {"times": [], "gflops": best}


RUNNERS = {
    "npmf": run_npmf,
    "keras": run_keras,
    "surprise": run_surprise,
    "cornac": run_cornac,
    "synthetic": run_synthetic,
    "gemm": run_gemm,
}


def main():
    spec = json.loads(sys.argv[1])
    from threadpoolctl import threadpool_limits

    with threadpool_limits(spec["threads"]):
        result = RUNNERS[spec["impl"]](spec)
    warm = spec.get("warmup", 1)
    timed = result["times"][warm:] or result["times"]
    result["median_s_per_epoch"] = float(np.median(timed)) if timed else None
    cpu = result.get("cpu_times", [])[warm:]
    result["median_cpu_s_per_epoch"] = float(np.median(cpu)) if cpu else None
    result["peak_rss_mb"] = max(peak_rss_mb(), result.get("setup_peak_rss_mb", 0))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
