"""Tests of the estimator contract and of predictions for unknown ids."""

import numpy as np
import pytest

from npmf.estimator import MODELS, DeepRegressor, MFRegressor, NotFittedError

TRAIN_X = np.array([[1, 10], [1, 20], [2, 10], [2, 30]])
TRAIN_Y = np.array([4.0, 2.0, 5.0, 3.0])


def synthetic_rank1(n_users=30, n_items=20, seed=0):
    """All ratings of a rank-1 matrix plus biases, as (X, y)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n_users)
    b = rng.normal(size=n_items)
    uu, ii = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    y = 3.0 + 0.5 * np.outer(a, b) + 0.3 * a[:, None]
    X = np.stack([uu.ravel(), ii.ravel()], axis=1)
    return X, y.ravel()


def small_model(name, **kw):
    kw.setdefault("seed", 0)
    kw.setdefault("n_epochs", 3)
    if name == "deep":
        kw.setdefault("hidden", (8, 4))
    return MODELS[name](n_factors=4, batch_size=16, **kw)


@pytest.fixture(params=sorted(MODELS))
def model_name(request):
    return request.param


def test_fit_returns_self_and_predict_shape(model_name):
    """fit returns the estimator; predict gives one rating per pair."""
    X, y = synthetic_rank1()
    model = small_model(model_name)
    assert model.fit(X, y) is model
    assert model.predict(X[:7]).shape == (7,)
    assert len(model.history_) == 3


def test_predict_before_fit_raises(model_name):
    """predict refuses to run before fit."""
    with pytest.raises(NotFittedError, match="not fitted yet"):
        small_model(model_name).predict(TRAIN_X)


def test_same_seed_same_result_other_seed_differs(model_name):
    """One seed gives one result; the global NumPy state changes nothing."""
    X, y = synthetic_rank1()
    np.random.seed(1)
    a = small_model(model_name, seed=5).fit(X, y)
    np.random.seed(2)
    np.random.random(100)
    b = small_model(model_name, seed=5).fit(X, y)
    c = small_model(model_name, seed=6).fit(X, y)
    for key in a.params_:
        assert a.params_[key].tobytes() == b.params_[key].tobytes()
    assert a.predict(X).tobytes() == b.predict(X).tobytes()
    assert not np.array_equal(a.params_["P"], c.params_["P"])


def test_loss_falls_over_epochs(model_name):
    """The logged epoch loss falls over a few epochs with Adamax."""
    X, y = synthetic_rank1()
    model = small_model(model_name, optimizer="adamax", learning_rate=0.01, n_epochs=6)
    model.fit(X, y)
    losses = [rec["loss"] for rec in model.history_]
    assert losses[-1] < 0.85 * losses[0], losses


def test_mf_recovers_rank1_matrix():
    """Without penalty, MF with Adamax fits a rank-1 matrix to RMSE < 0.05."""
    X, y = synthetic_rank1()
    model = MFRegressor(
        n_factors=2,
        n_epochs=150,
        batch_size=32,
        optimizer="adamax",
        learning_rate=0.02,
        l2=0.0,
        seed=0,
    ).fit(X, y)
    assert model.evaluate(X, y)["rmse"] < 0.05


def test_unknown_ids_fall_back_to_biases():
    """Issue 7 case 2: unknown item -> mu + bu, unknown user -> mu + bi, both -> mu."""
    model = MFRegressor(n_factors=2, n_epochs=2, batch_size=2, seed=0).fit(
        TRAIN_X, TRAIN_Y
    )
    assert model.mu_ == 3.5  # (4 + 2 + 5 + 3) / 4
    test_x = np.array([[1, 99], [9, 10], [9, 99], [2, 20]])
    with pytest.warns(UserWarning, match="3 of 4 pairs"):
        pred = model.predict(test_x)
    bu, bi = model.params_["bu"], model.params_["bi"]
    u1 = model.user_map_.to_index([1])[0]
    i10 = model.item_map_.to_index([10])[0]
    assert pred[0] == pytest.approx(3.5 + bu[u1])
    assert pred[1] == pytest.approx(3.5 + bi[i10])
    assert pred[2] == 3.5
    assert np.all(np.isfinite(pred))
    _, ustat, istat = model.predict_detail(test_x)
    assert ustat.tolist() == ["trained", "unknown", "unknown", "trained"]
    assert istat.tolist() == ["unknown", "trained", "unknown", "trained"]

    scores = model.evaluate(test_x, [3, 4, 2, 4])
    assert scores["n"] == 4 and scores["n_known"] == 1
    assert scores["n_unknown_user"] == 2 and scores["n_unknown_item"] == 2
    assert scores["rmse_known"] == pytest.approx(abs(pred[3] - 4))


def test_untrained_ids_reported():
    """Ids in the tables without training ratings are flagged 'untrained'."""
    model = MFRegressor(n_factors=2, n_epochs=1, batch_size=2, seed=0)
    model.fit(TRAIN_X, TRAIN_Y, user_ids=[1, 2, 3], item_ids=[10, 20, 30, 40])
    _, ustat, istat = model.predict_detail(np.array([[3, 40], [1, 10]]))
    assert ustat.tolist() == ["untrained", "trained"]
    assert istat.tolist() == ["untrained", "trained"]
    assert model.evaluate(np.array([[3, 40], [1, 10]]), [3, 4])["n_untrained"] == 1


@pytest.mark.parametrize(
    "y, shape",
    [
        (np.zeros((4, 1)), r"\(4, 1\)"),
        (np.zeros((4, 4)), r"\(4, 4\)"),
        (np.zeros(3), r"\(3,\)"),
    ],
)
def test_fit_rejects_target_shape(y, shape):
    """Issue 7 case 10: a target not of shape (n,) is rejected naming both shapes."""
    with pytest.raises(
        ValueError, match=rf"y must have shape \(4,\).*got shape {shape}"
    ):
        MFRegressor(n_epochs=1).fit(TRAIN_X, y)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_factors": 0}, "n_factors must be an integer >= 1, got 0"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
        (
            {"learning_rate": -0.1},
            r"learning_rate must be a finite number > 0, got -0.1",
        ),
        ({"l2": float("nan")}, "l2 must be a finite number >= 0, got nan"),
        ({"optimizer": "adam"}, "optimizer must be one of"),
        ({"loss": "mae"}, "loss must be one of"),
    ],
)
def test_fit_validates_hyperparameters(kwargs, message):
    """Bad hyperparameters are named with their value."""
    with pytest.raises(ValueError, match=message):
        MFRegressor(**kwargs).fit(TRAIN_X, TRAIN_Y)


def test_fit_rejects_non_finite_ratings():
    """A NaN rating is refused with its position."""
    with pytest.raises(ValueError, match="got nan at position 2"):
        MFRegressor(n_epochs=1).fit(TRAIN_X, [4, 2, np.nan, 3])


def test_get_params_round_trip(model_name):
    """get_params returns the constructor arguments unchanged."""
    model = small_model(model_name)
    assert type(model)(**model.get_params()).get_params() == model.get_params()


def test_checkpoint_resume_equals_uninterrupted(model_name, tmp_path):
    """Training 2 epochs, then resuming to 4, equals 4 epochs straight."""
    X, y = synthetic_rank1()
    straight = small_model(model_name, n_epochs=4, optimizer="adamax").fit(X, y)
    ckpt = tmp_path / "ckpt.npz"
    small_model(model_name, n_epochs=2, optimizer="adamax").fit(X, y, checkpoint=ckpt)
    resumed = small_model(model_name, n_epochs=4, optimizer="adamax")
    resumed.fit(X, y, checkpoint=ckpt, resume=True)
    assert [r["epoch"] for r in resumed.history_] == [1, 2, 3, 4]
    for key in straight.params_:
        assert resumed.params_[key].tobytes() == straight.params_[key].tobytes(), key


def test_resume_refuses_checkpoint_of_other_run(tmp_path):
    """A checkpoint from other data or hyperparameters is refused."""
    X, y = synthetic_rank1()
    ckpt = tmp_path / "ckpt.npz"
    MFRegressor(n_factors=4, n_epochs=1, seed=0).fit(X, y, checkpoint=ckpt)
    with pytest.raises(ValueError, match=r"another run \(same hyperparameters, other"):
        MFRegressor(n_factors=4, n_epochs=2, seed=0).fit(
            X, y + 1, checkpoint=ckpt, resume=True
        )
    # the hyperparameters that differ are named, with both values
    with pytest.raises(
        ValueError, match=r"another run \(l2 0\.01 there, 0\.02 here; n_factors 4 there"
    ):
        MFRegressor(n_factors=5, n_epochs=2, seed=0, l2=0.02).fit(
            X, y, checkpoint=ckpt, resume=True
        )


def test_divergence_leaves_model_unfitted():
    """Issue 7 case 9: a learning rate of 1000 stops training, no params left."""
    from npmf.train import TrainingDivergedError

    X, y = synthetic_rank1()
    model = MFRegressor(n_factors=4, n_epochs=3, learning_rate=1000.0, seed=0)
    with pytest.raises(
        TrainingDivergedError,
        match=r"epoch \d+, batch \d+ with optimizer sgd "
        r"and learning_rate 1000",
    ):
        model.fit(X, y)
    with pytest.raises(NotFittedError):
        model.predict(X)


@pytest.mark.parametrize(
    "u, i, message",
    [
        ([0, -1], [0, 0], r"u\[1\] = -1 is outside the table of 2 rows"),
        ([0, 2], [0, 0], r"u\[1\] = 2 is outside the table of 2 rows"),
        ([0], [3], r"i\[0\] = 3 is outside the table of 3 rows"),
    ],
)
def test_predict_indices_refuses_out_of_range(u, i, message):
    """Issue 7 case 3: -1 or n_users is an error naming index and table size."""
    model = MFRegressor(n_factors=2, n_epochs=1, seed=0).fit(TRAIN_X, TRAIN_Y)
    with pytest.raises(IndexError, match=message):
        model.predict_indices(u, i)


def test_predict_indices_equals_predict():
    """Row-index predictions equal raw-id predictions for the same pairs."""
    model = MFRegressor(n_factors=2, n_epochs=1, seed=0).fit(TRAIN_X, TRAIN_Y)
    u = model.user_map_.to_index(TRAIN_X[:, 0])
    i = model.item_map_.to_index(TRAIN_X[:, 1])
    np.testing.assert_array_equal(model.predict_indices(u, i), model.predict(TRAIN_X))


def test_top_n_refuses_bad_user_row():
    """top_n refuses a user row outside the table."""
    from npmf.recommend import top_n

    model = MFRegressor(n_factors=2, n_epochs=1, seed=0).fit(TRAIN_X, TRAIN_Y)
    with pytest.raises(IndexError, match="outside the table of 2 rows"):
        top_n(model, -1, 3)
    # user 1 rated items 10 and 20 in training: only item 30 is left
    assert [model.item_map_.ids[j] for j, _ in top_n(model, 0, 5)] == [30]


def test_deep_unknown_item_uses_average_item():
    """For the deep model an unknown item is predicted as the mean item row."""
    from npmf.estimator import DeepRegressor

    model = DeepRegressor(
        n_factors=2, hidden=(4,), activation="relu", n_epochs=2, batch_size=2, seed=0
    ).fit(TRAIN_X, TRAIN_Y)
    P, Q, bu, bi = (model.params_[k] for k in ("P", "Q", "bu", "bi"))
    ext = dict(
        model.params_, Q=np.vstack([Q, Q.mean(axis=0)]), bi=np.append(bi, bi.mean())
    )
    r_hat, _ = model._core().forward(ext, np.array([0]), np.array([3]))
    with pytest.warns(UserWarning):
        pred = model.predict(np.array([[1, 99]]))
    assert pred[0] == pytest.approx(model.mu_ + r_hat[0], abs=1e-6)


def test_seed_must_be_nonnegative_int():
    """A negative or non-integer seed is named with its value."""
    with pytest.raises(
        ValueError, match="seed must be None or an integer >= 0, got -1"
    ):
        MFRegressor(seed=-1).fit(TRAIN_X, TRAIN_Y)
    with pytest.raises(ValueError, match="got 'a'"):
        MFRegressor(seed="a").fit(TRAIN_X, TRAIN_Y)


EARLY_STOPPING = dict(n_factors=2, batch_size=16, optimizer="adamax",
                      learning_rate=0.05, l2=0.0, validation_fraction=0.2,
                      patience=2, seed=0)  # fmt: skip


def test_early_stopping_restores_best_epoch_and_never_sees_test():
    """Early stopping keeps the best held-out epoch's weights."""
    X, y = synthetic_rank1()
    model = MFRegressor(n_epochs=40, **EARLY_STOPPING).fit(X, y)
    scores = [rec["stop_rmse"] for rec in model.history_]
    assert model.best_epoch_ == 1 + int(np.argmin(scores))
    assert len(model.history_) <= model.best_epoch_ + 2
    # the weights kept are the best epoch's: recompute its held-out RMSE
    rng = np.random.default_rng(0)
    n_stop = round(0.2 * len(y))
    stop = np.sort(rng.permutation(len(y))[:n_stop])
    pred = model.predict(X[stop])
    assert np.sqrt(np.mean((pred - y[stop]) ** 2)) == pytest.approx(
        min(scores), rel=1e-5
    )


def test_refit_trains_best_epoch_count_on_all_ratings():
    """refit retrains from scratch for best_epoch_ epochs on every rating."""
    X, y = synthetic_rank1()
    model = MFRegressor(n_epochs=30, refit=True, **EARLY_STOPPING).fit(X, y)
    assert len(model.history_) == model.best_epoch_
    assert "stop_rmse" not in model.history_[0]


def _epoch_weights(model, X, y):
    """Fit ``model`` and return its weights at the end of every epoch."""
    snaps = []

    def keep(record):
        snaps.append({k: W.copy() for k, W in model.params_.items()})

    model.fit(X, y, on_epoch_end=keep)
    return snaps


@pytest.mark.parametrize("cls", [MFRegressor, DeepRegressor])
def test_average_epochs_keeps_mean_of_last_epochs(cls):
    """average_epochs=3 ends on the mean of the last three epochs' weights.

    The run itself is the same as without averaging (same end-of-epoch
    weights); only the kept weights differ.
    """
    X, y = synthetic_rank1()
    kwargs = dict(n_factors=2, n_epochs=5, batch_size=16, learning_rate=0.05, seed=0)
    if cls is DeepRegressor:
        kwargs.update(hidden=(4,), activation="relu")
    plain = _epoch_weights(cls(**kwargs), X, y)
    averaged = cls(average_epochs=3, **kwargs)
    snaps = _epoch_weights(averaged, X, y)
    for key, W in averaged.params_.items():
        for a, b in zip(snaps, plain):
            np.testing.assert_array_equal(a[key], b[key])
        mean = (plain[2][key] + plain[3][key] + plain[4][key]) / 3  # (shape of W)
        np.testing.assert_allclose(W, mean, rtol=1e-6, atol=1e-7, err_msg=key)
        assert not np.allclose(W, plain[4][key])


def test_average_epochs_with_early_stopping_keeps_mean_up_to_best():
    """Without refit, early stopping keeps the mean of the epochs ending at
    the best one (the best epoch is still chosen on the epochs' own weights).
    """
    X, y = synthetic_rank1()
    plain = MFRegressor(n_epochs=40, **EARLY_STOPPING)
    snaps = _epoch_weights(plain, X, y)
    model = MFRegressor(n_epochs=40, average_epochs=2, **EARLY_STOPPING).fit(X, y)
    best = plain.best_epoch_
    assert model.best_epoch_ == best > 1
    for key, W in model.params_.items():
        mean = (snaps[best - 2][key] + snaps[best - 1][key]) / 2  # (shape of W)
        np.testing.assert_allclose(W, mean, rtol=1e-6, atol=1e-7, err_msg=key)


def test_average_epochs_is_checked(tmp_path):
    """average_epochs must be a positive integer and excludes checkpoints."""
    with pytest.raises(ValueError, match="average_epochs must be an integer >= 1"):
        MFRegressor(average_epochs=0).fit(TRAIN_X, TRAIN_Y)
    with pytest.raises(ValueError, match="checkpoint cannot be combined with"):
        MFRegressor(average_epochs=2, n_epochs=1).fit(
            TRAIN_X, TRAIN_Y, checkpoint=tmp_path / "c.npz"
        )


def test_lr_decay_schedule():
    """Epoch e runs at learning_rate * lr_decay ** (e - 1)."""
    seen = []
    X, y = synthetic_rank1()
    model = MFRegressor(
        n_factors=2, n_epochs=3, learning_rate=0.1, lr_decay=0.5, seed=0
    )
    original = model.fit

    def record(rec):
        seen.append(model.optimizer_.learning_rate)

    original(X, y, on_epoch_end=record)
    # read after each epoch: the rate the next epoch will use
    assert seen == pytest.approx([0.05, 0.025, 0.0125])


def test_clip_limits_predictions_to_training_range():
    """clip=True keeps every prediction inside [min, max] of the training ratings."""
    X, y = synthetic_rank1()
    model = MFRegressor(n_factors=2, n_epochs=2, learning_rate=0.5, clip=True, seed=0)
    model.fit(X, y)
    pred = model.predict(X)
    assert pred.min() >= y.min() and pred.max() <= y.max()
    assert model.rating_range_ == (y.min(), y.max())


def test_rows_penalty_trains_and_differs_from_table():
    """penalty='rows' trains (reference path) and gives other weights than 'table'."""
    X, y = synthetic_rank1()
    kw = dict(
        n_factors=2,
        n_epochs=2,
        batch_size=16,
        loss="mse",
        learning_rate=0.05,
        l2=0.05,
        seed=0,
    )
    rows = MFRegressor(penalty="rows", l2_bias=0.01, **kw).fit(X, y)
    table = MFRegressor(**kw).fit(X, y)
    assert rows.history_[-1]["loss"] < rows.history_[0]["loss"]
    assert not np.allclose(rows.params_["P"], table.params_["P"])


def test_init_std_draws_normal_embeddings():
    """init_std gives normal embeddings with that spread."""
    model = MFRegressor(n_factors=50, init_std=0.01)
    params = model._init_params(200, 100, np.random.default_rng(0))
    assert params["P"].std() == pytest.approx(0.01, rel=0.05)
    assert params["P"].dtype == np.float32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"penalty": "whole"}, "penalty must be one of"),
        ({"lr_decay": 1.5}, r"lr_decay must be in \(0, 1\], got 1.5"),
        ({"bias_lr_scale": 0.0}, "bias_lr_scale must be a finite number > 0, got 0.0"),
        ({"lr_decay": -1.0}, "lr_decay must be a finite number > 0, got -1.0"),
        ({"refit": True}, "refit .* needs validation_fraction"),
        ({"bias_lr_scale": float("inf")}, "bias_lr_scale must be a finite number"),
        ({"validation_fraction": 1.0}, r"validation_fraction must be in \(0, 1\)"),
        ({"patience": 0}, "patience must be an integer >= 1, got 0"),
    ],
)
def test_fit_validates_training_options(kwargs, message):
    """The options beyond the tutorial are validated too."""
    with pytest.raises(ValueError, match=message):
        MFRegressor(**kwargs).fit(TRAIN_X, TRAIN_Y)
