"""Measure the tutorial's broadcast RMSE metric against the true RMSE.

The tutorial compiles its Keras model with ``metrics=[RMSE]`` and passes
the targets as a 1-D array. On the metric path Keras does not align
``y_true (batch,)`` with ``y_pred (batch, 1)``, so ``y_true - y_pred``
broadcasts to ``(batch, batch)`` and the logged ``rmse`` / ``val_rmse``
measure ``sqrt(mean_{a,b} (y_a - p_b) ** 2)`` per batch
(``KERAS_SEMANTICS.md`` section 3). This script trains the MF twin through
``fit`` exactly that way and sets the logged values beside the whole-set
RMSE computed from ``predict``, and beside the two formulas recomputed in
NumPy from the same predictions.

Run ``python -m reference.broadcast_demo --data-dir DIR`` (options:
``--epochs``, ``--optimizer``, ``--seed``).
"""

import argparse

import numpy as np

from reference import keras_models
from reference.parity import init_params, load_tutorial_data


def batched_metric(r, r_hat, batch_size, broadcast):
    """Keras's epoch value of the custom metric: unweighted batch mean.

    Parameters
    ----------
    r : ndarray of shape (n,)
        Targets in the order ``fit`` or ``evaluate`` saw them.
    r_hat : ndarray of shape (n,)
        Predictions at the weights the metric saw.
    batch_size : int
        Batch size; the last batch may be short.
    broadcast : bool
        True for the ``(batch, batch)`` broadcast of a 1-D target, False for
        the aligned per-batch RMSE.

    Returns
    -------
    float
        Mean over batches, each batch counted once whatever its size.
    """
    values = []
    for start in range(0, len(r), batch_size):
        y = r[start : start + batch_size].astype(np.float64)  # (batch,)
        p = r_hat[start : start + batch_size].astype(np.float64)  # (batch,)
        if broadcast:
            e = y[None, :] - p[:, None]  # (batch, batch): [b, a] = y_a - p_b
        else:
            e = y - p  # (batch,)
        values.append(np.sqrt(np.mean(e * e)))
    return float(np.mean(values))


def whole_set_rmse(r, r_hat):
    """Root mean squared error over the whole set.

    Parameters
    ----------
    r : ndarray of shape (n,)
        Targets.
    r_hat : ndarray of shape (n,)
        Predictions.

    Returns
    -------
    float
        ``sqrt(mean((r_hat - r) ** 2))`` in float64.
    """
    e = r_hat.astype(np.float64) - r.astype(np.float64)  # (n,)
    return float(np.sqrt(np.mean(e * e)))


def measure(
    data, *, optimizer="sgd", n_epochs=1, batch_size=256, n_factors=200, seed=0
):
    """Train the MF twin as the tutorial does and compare its metrics.

    Parameters
    ----------
    data : dict
        As :func:`reference.parity.load_tutorial_data` returns it.
    optimizer : {"sgd", "adamax"}, default="sgd"
        Optimizer.
    n_epochs : int, default=1
        Epochs, one ``fit`` call each on a fresh NumPy permutation.
    batch_size : int, default=256
        The tutorial's MF batch size.
    n_factors : int, default=200
        Embedding size ``k``.
    seed : int, default=0
        Seed of the initial weights (npmf's draw) and the permutations.

    Returns
    -------
    dict
        Logged ``loss``, ``rmse``, ``val_loss``, ``val_rmse`` of the last
        epoch; ``true_rmse`` and ``true_val_rmse`` (whole training and
        validation sets at the end-of-epoch weights, from ``predict``);
        ``numpy_broadcast_val_rmse`` and ``numpy_aligned_val_rmse`` (the
        batched metric recomputed both ways from the same predictions);
        ``std_val`` (std of the validation targets, the broadcast metric's
        floor).
    """
    model = keras_models.build_mf(
        data["n_users"],
        data["n_items"],
        n_factors,
        optimizer=optimizer,
        metrics=[keras_models.RMSE],
    )
    params = init_params("mf", data["n_users"], data["n_items"], n_factors, None, seed)
    keras_models.to_keras_weights(model, params)
    vu, vi = data["vu"].astype(np.int64), data["vi"].astype(np.int64)  # (n_val,)
    vr = data["vr"]  # (n_val,)

    # the tutorial's fit: 1-D targets, validation after every epoch
    rng = np.random.default_rng(seed)
    for _ in range(n_epochs):
        order = rng.permutation(len(data["r"]))  # (n,)
        u, i, r = (data[key][order] for key in ("u", "i", "r"))
        history = model.fit(
            [u.astype(np.int64), i.astype(np.int64)],
            r,
            batch_size=batch_size,
            epochs=1,
            shuffle=False,
            validation_data=([vu, vi], vr),
            verbose=0,
        )
    logged = {key: float(values[-1]) for key, values in history.history.items()}

    # the same predictions, scored three ways
    r_hat = model.predict([vu, vi], batch_size=batch_size, verbose=0)[:, 0]  # (n_val,)
    train_pred = model.predict(
        [data["u"].astype(np.int64), data["i"].astype(np.int64)],
        batch_size=batch_size,
        verbose=0,
    )[:, 0]  # (n,)
    return {
        **logged,
        "true_rmse": whole_set_rmse(data["r"], train_pred),
        "true_val_rmse": whole_set_rmse(vr, r_hat),
        "numpy_broadcast_val_rmse": batched_metric(vr, r_hat, batch_size, True),
        "numpy_aligned_val_rmse": batched_metric(vr, r_hat, batch_size, False),
        "std_val": float(np.std(vr.astype(np.float64))),
    }


def main(argv=None):
    """Run the measurement and print one line per value.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments.

    Returns
    -------
    int
        Exit status 0.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "adamax"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = load_tutorial_data(args.dataset, args.data_dir)
    out = measure(data, optimizer=args.optimizer, n_epochs=args.epochs, seed=args.seed)
    print(
        f"MF {args.optimizer}, {args.epochs} epoch(s), batch 256, {args.dataset} "
        f"tutorial split, targets passed 1-D as in the tutorial"
    )
    for key, value in out.items():
        print(f"{key:<26}{value:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
