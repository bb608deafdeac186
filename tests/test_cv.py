"""Tests of cross-validation: scores, summary, and no test-fold leakage."""

import numpy as np
import pandas as pd
import pytest

from npmf.cli import main
from npmf.cv import fit_and_score, summarize
from npmf.estimator import MFRegressor


def table(rows):
    return pd.DataFrame(rows, columns=["user", "item", "rating"])


def test_fit_and_score_never_shows_test_rows_to_fit(monkeypatch):
    """No test-fold rating reaches training, validation or early stopping."""
    train = table([(1, 10, 4), (1, 20, 2), (2, 10, 5), (2, 30, 3), (3, 20, 1)])
    test = table([(1, 30, 5), (3, 10, 2)])
    seen = {}
    original = MFRegressor.fit

    def spy(self, X, y, **kwargs):
        seen["pairs"] = set(map(tuple, np.asarray(X)))
        seen["y"] = list(y)
        seen["validation_data"] = kwargs.get("validation_data")
        return original(self, X, y, **kwargs)

    monkeypatch.setattr(MFRegressor, "fit", spy)
    scores = fit_and_score(MFRegressor(n_factors=2, n_epochs=2, seed=0), train, test)
    assert seen["pairs"] == {(1, 10), (1, 20), (2, 10), (2, 30), (3, 20)}
    assert not seen["pairs"] & {(1, 30), (3, 10)}
    assert seen["validation_data"] is None
    assert scores["n"] == 2 and scores["epochs"] == 2


def test_summarize_mean_and_std():
    """Mean and population std of per-fold scores."""
    out = summarize([{"rmse": 0.9, "mae": 0.7}, {"rmse": 1.0, "mae": 0.8}])
    assert out["mean_rmse"] == pytest.approx(0.95)
    assert out["std_rmse"] == pytest.approx(0.05)
    assert out["mean_mae"] == pytest.approx(0.75)
    assert out["n_folds"] == 2


def test_cv_cli_two_folds(data_dir, tmp_path, capsys):
    """cv over u1,u2 prints a line per fold and a mean_rmse line."""
    code = main(
        [
            "cv",
            "--data-dir",
            str(data_dir),
            "--folds",
            "u1,u2",
            "--epochs",
            "1",
            "--factors",
            "8",
            "--seed",
            "0",
            "--out",
            str(tmp_path / "cv.json"),
        ]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert [ln.split()[1] for ln in out[:2]] == ["u1", "u2"]
    assert out[-1].startswith("mean_rmse ")
    assert (tmp_path / "cv.json").is_file()


def test_cv_cli_rejects_unknown_fold(data_dir, capsys):
    """An unknown fold name is a usage error naming the valid ones."""
    assert main(["cv", "--data-dir", str(data_dir), "--folds", "u1,u9"]) == 2
    assert "u1, u2, u3, u4, u5, ua, ub" in capsys.readouterr().err


def test_presets_build_valid_estimators():
    """Every preset names a model and hyperparameters its estimator accepts."""
    from npmf.estimator import MODELS
    from npmf.presets import PRESETS, get_preset

    for name in PRESETS:
        preset = get_preset(name)
        model = MODELS[preset["model"]](**preset["hyperparameters"])
        model._check_hyperparameters()
    with pytest.raises(ValueError, match="preset must be one of"):
        get_preset("best")


def test_cli_flag_overrides_preset(data_dir, capsys):
    """A flag given with --preset wins over the preset's value."""
    import argparse

    from npmf.cli import build_estimator, build_parser

    args = build_parser().parse_args(
        ["train", "--preset", "mf-best", "--factors", "8", "--out", "x"]
    )
    model = build_estimator(args)
    assert model.n_factors == 8 and model.penalty == "rows" and model.refit is True
    assert isinstance(args, argparse.Namespace)
