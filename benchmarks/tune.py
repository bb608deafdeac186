"""Re-derive the ``mf-best`` / ``deep-best`` presets with optuna.

The search sees training data only: it holds out 10% of ``u1.base`` (seed
123) as its scoring set, and each trial's early stopping carves its own 5%
slice from the remaining 90%. No ``u*.test`` rating is read.

    pip install -e '.[tune]'
    python benchmarks/tune.py --model mf --trials 60 --data-dir ../shared/data

The best trial's hyperparameters are printed as a preset dict and written
to ``benchmarks/tune-<model>.json``.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from npmf import data
from npmf.estimator import MODELS
from npmf.presets import get_preset


def inner_split(data_dir):
    """Split ``u1.base`` into 90% tuning-train and 10% tuning-score."""
    train, _ = data.canonical_split("u1", data_dir)
    rng = np.random.default_rng(123)
    score = rng.random(len(train)) < 0.1
    return train[~score], train[score]


def suggest(trial, model):
    """Search space around the presets (log scales for weights and rates)."""
    base = get_preset(f"{model}-best")["hyperparameters"]
    if model == "mf":
        base.update(
            n_factors=trial.suggest_categorical("n_factors", [32, 64, 128]),
            init_std=trial.suggest_float("init_std", 0.002, 0.03, log=True),
            l2=trial.suggest_float("l2", 0.01, 0.2, log=True),
            l2_bias=trial.suggest_float("l2_bias", 0.001, 0.1, log=True),
            learning_rate=trial.suggest_float("learning_rate", 0.3, 3.0, log=True),
            lr_decay=trial.suggest_float("lr_decay", 0.9, 0.99),
            bias_lr_scale=trial.suggest_float("bias_lr_scale", 0.2, 1.0, log=True),
        )
    else:
        base.update(
            n_factors=trial.suggest_categorical("n_factors", [32, 64, 128]),
            hidden=(trial.suggest_categorical("width", [128, 256, 512]),),
            l2=trial.suggest_float("l2", 0.003, 0.1, log=True),
            l2_dense=trial.suggest_float("l2_dense", 1e-5, 1e-3, log=True),
            learning_rate=trial.suggest_float("learning_rate", 3e-4, 3e-3, log=True),
        )
    base["refit"] = False  # score the early-stopped model itself
    return base


def main(argv=None):
    import optuna

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mf", "deep"), default="mf")
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    fit_part, score_part = inner_split(args.data_dir)
    ids = {
        "user_ids": np.union1d(fit_part.user, score_part.user),
        "item_ids": np.union1d(fit_part.item, score_part.item),
    }

    def objective(trial):
        model = MODELS[args.model](**suggest(trial, args.model))
        model.fit(fit_part[["user", "item"]], fit_part.rating.to_numpy(), **ids)
        return model.evaluate(
            score_part[["user", "item"]], score_part.rating.to_numpy()
        )["rmse"]

    t0 = time.perf_counter()
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=0)
    )
    study.optimize(objective, n_trials=args.trials)
    best = {
        "model": args.model,
        "inner_rmse": study.best_value,
        "hyperparameters": suggest(study.best_trial, args.model),
        "trials": args.trials,
        "seconds": time.perf_counter() - t0,
    }
    best["hyperparameters"]["refit"] = True
    out = Path(__file__).with_name(f"tune-{args.model}.json")
    out.write_text(json.dumps(best, indent=2, default=list) + "\n")
    print(json.dumps(best, indent=2, default=list))


if __name__ == "__main__":
    main()
