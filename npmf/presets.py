"""Named training recipes for ``--preset``.

Each preset names a model and the hyperparameters that differ from that
model's defaults; flags given on the command line override them. The
measured scores of each preset are in the README.
"""

_EARLY_STOPPING = {
    "validation_fraction": 0.05,
    "patience": 4,
    "refit": True,
    "clip": True,
}

PRESETS = {
    # the Keras tutorial, faithfully: whole-table L2, batch RMSE, SGD 0.01
    "tutorial": {"model": "mf", "hyperparameters": {}},
    "tutorial-deep": {"model": "deep", "hyperparameters": {}},
    # Funk-SVD-style training of the same MF: per-rating L2 on the batch's
    # rows, MSE, small normal init, decaying SGD with the biases at half the
    # step, early stopping on 5% of the training ratings, then a refit on all
    # of them. Tuned with optuna on an inner split of u1.base only
    # (benchmarks/tune.py); k, rate, decay and bias step then chosen on inner
    # 90/10 splits of u1.base and u2.base.
    "mf-best": {
        "model": "mf",
        "hyperparameters": {
            "n_factors": 128,
            "init_std": 0.0065,
            "penalty": "rows",
            "l2": 0.0675,
            "l2_bias": 0.009,
            "loss": "mse",
            "optimizer": "sgd",
            "learning_rate": 1.5,
            "bias_lr_scale": 0.5,
            "batch_size": 64,
            "lr_decay": 0.92,
            "n_epochs": 60,
            "seed": 0,
            **_EARLY_STOPPING,
        },
    },
    # the same deep family with one relu layer, per-rating L2 on embeddings,
    # a little L2 on the kernel, Adamax with decay, early stopping and refit;
    # the refit keeps the mean of its last two epochs' weights (chosen on an
    # inner 90/10 split of u1.base, like the rest)
    "deep-best": {
        "model": "deep",
        "hyperparameters": {
            "n_factors": 128,
            "hidden": (512,),
            "activation": "relu",
            "init_std": 0.03,
            "penalty": "rows",
            "l2": 0.03,
            "l2_bias": 0.0035,
            "l2_dense": 1e-4,
            "loss": "mse",
            "optimizer": "adamax",
            "learning_rate": 0.003,
            "batch_size": 512,
            "lr_decay": 0.956,
            "n_epochs": 40,
            "seed": 0,
            "average_epochs": 2,
            **_EARLY_STOPPING,
        },
    },
}
"""Preset name to ``{"model": name, "hyperparameters": dict}``."""


def get_preset(name):
    """Return the preset called ``name``.

    Parameters
    ----------
    name : str
        Preset name.

    Returns
    -------
    dict
        ``{"model": str, "hyperparameters": dict}`` (a copy).

    Raises
    ------
    ValueError
        If the name is unknown, listing the known ones.
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    preset = PRESETS[name]
    return {
        "model": preset["model"],
        "hyperparameters": dict(preset["hyperparameters"]),
    }
