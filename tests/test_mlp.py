"""Tests for npmf.models.mlp and the DeepRegressor estimator."""

import numpy as np
import pytest

from npmf.estimator import MODELS, DeepRegressor, NotFittedError
from npmf.io import load_model, save_model
from npmf.layers import ACTIVATIONS
from npmf.losses import rmse_loss
from npmf.models import mlp
from npmf.optim import add_l2_grads, l2_penalty

# ---------------------------------------------------------------- math core


def test_init_params_keys_shapes_dtypes():
    """Keys P..b3, Keras shapes, float32, zero biases, kernels inside +-L."""
    rng = np.random.default_rng(0)

    params = mlp.init_params(4, 5, 3, (6, 2), rng)

    # x has 2k + 2 = 8 columns: 8 -> 6 -> 2 -> 1
    expected = {
        "P": (4, 3), "Q": (5, 3), "bu": (4,), "bi": (5,),
        "W1": (8, 6), "b1": (6,), "W2": (6, 2), "b2": (2,), "W3": (2, 1), "b3": (1,),
    }  # fmt: skip
    assert {key: W.shape for key, W in params.items()} == expected
    assert all(W.dtype == np.float32 for W in params.values())
    for layer, (fan_in, fan_out) in enumerate([(8, 6), (6, 2), (2, 1)], start=1):
        assert np.abs(params[f"W{layer}"]).max() <= np.sqrt(6 / (fan_in + fan_out))
        np.testing.assert_array_equal(params[f"b{layer}"], 0.0)
    assert np.abs(params["P"]).max() <= 0.05


def test_init_params_same_seed_same_values():
    """One seed gives identical parameters."""
    a = mlp.init_params(4, 5, 3, (6, 2), np.random.default_rng(7))
    b = mlp.init_params(4, 5, 3, (6, 2), np.random.default_rng(7))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def _hand_params():
    """k = 1, one hidden layer of width 2; values chosen for mental arithmetic."""
    f = np.float32
    return {
        "P": np.array([[1.0], [2.0]], f),
        "Q": np.array([[3.0], [4.0]], f),
        "bu": np.array([0.5, -0.5], f),
        "bi": np.array([1.0, -1.0], f),
        # W1 routes x columns (P, bu) to unit 1 and (Q, bi) to unit 2
        "W1": np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], f),
        "b1": np.array([0.5, 0.0], f),
        "W2": np.array([[1.0], [-1.0]], f),
        "b2": np.array([0.25], f),
    }


def test_forward_hand_example_column_order_and_linear_output():
    """x = [P[u], Q[i], bu[u], bi[i]]; relu hidden, linear (negative) output."""
    params = _hand_params()
    u, i = np.array([1]), np.array([0])

    r_hat, (_, _, inputs) = mlp.forward(params, u, i, activation="relu")

    # x = [P[1], Q[0], bu[1], bi[0]] = [2, 3, -0.5, 1]
    np.testing.assert_array_equal(inputs[0], [[2.0, 3.0, -0.5, 1.0]])
    # z1 = [2 - 0.5 + 0.5, 3 + 1 + 0] = [2, 4]; relu keeps both
    np.testing.assert_array_equal(inputs[1], [[2.0, 4.0]])
    # r_hat = 2 * 1 + 4 * -1 + 0.25 = -1.75: below 0, so no relu on the output
    np.testing.assert_array_equal(r_hat, [-1.75])
    assert r_hat.shape == (1,) and r_hat.dtype == np.float32


def test_backward_hand_example():
    """Each gradient of the hand example, walked back by hand."""
    params = _hand_params()
    u, i = np.array([1]), np.array([0])
    _, cache = mlp.forward(params, u, i, activation="relu")

    grads = mlp.backward(params, cache, np.array([1.0], np.float32), "relu")

    # dz2 = dr_hat = 1; dW2 = a1.T dz2 = [[2], [4]]; db2 = 1
    np.testing.assert_array_equal(grads["W2"], [[2.0], [4.0]])
    np.testing.assert_array_equal(grads["b2"], [1.0])
    # da1 = dz2 W2.T = [1, -1]; relu' = 1 on both (a1 > 0) so dz1 = [1, -1]
    # dW1 = x.T dz1 = rows [2, -2], [3, -3], [-0.5, 0.5], [1, -1]; db1 = [1, -1]
    np.testing.assert_array_equal(
        grads["W1"], [[2.0, -2.0], [3.0, -3.0], [-0.5, 0.5], [1.0, -1.0]]
    )
    np.testing.assert_array_equal(grads["b1"], [1.0, -1.0])
    # dx = dz1 W1.T = [1, -1, 1, -1] -> dP[1], dQ[0], dbu[1], dbi[0]
    np.testing.assert_array_equal(grads["P"], [[0.0], [1.0]])
    np.testing.assert_array_equal(grads["Q"], [[-1.0], [0.0]])
    np.testing.assert_array_equal(grads["bu"], [0.0, 1.0])
    np.testing.assert_array_equal(grads["bi"], [-1.0, 0.0])


# tiny configuration with a repeated user (0, 2) and item (1), and unused rows
GC_U = np.array([0, 2, 0, 3, 2, 1])
GC_I = np.array([1, 1, 4, 0, 1, 2])
GC_L2 = 0.01


def _gradcheck_setup(activation):
    rng = np.random.default_rng(3)
    params = mlp.init_params(4, 5, 3, (4, 3), rng, dtype=np.float64)
    # redraw every entry at scale 0.5 so sigmoid/tanh leave their linear range
    # and the zero biases do not hide a bias bug
    params = {key: rng.normal(scale=0.5, size=W.shape) for key, W in params.items()}
    r = rng.normal(size=len(GC_U))
    return params, r


def _total_loss(params, r, activation):
    r_hat, _ = mlp.forward(params, GC_U, GC_I, activation)
    loss, _ = rmse_loss(r_hat, r)
    return loss + l2_penalty(params, GC_L2)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_backward_matches_central_differences(activation):
    """RMSE + whole-table L2 gradient equals float64 central differences."""
    params, r = _gradcheck_setup(activation)

    # keep relu kinks out of reach of the step h
    _, (_, _, inputs) = mlp.forward(params, GC_U, GC_I, activation)
    for layer in (1, 2):
        z = inputs[layer - 1] @ params[f"W{layer}"] + params[f"b{layer}"]
        assert np.abs(z).min() > 1e-4, "test setup puts a pre-activation near 0"

    # analytic: data-loss backward plus 2 l2 W on the embedding tables
    r_hat, cache = mlp.forward(params, GC_U, GC_I, activation)
    _, dr_hat = rmse_loss(r_hat, r)
    grads = add_l2_grads(mlp.backward(params, cache, dr_hat, activation), params, GC_L2)

    h = 1e-6
    for key, W in params.items():
        numeric = np.zeros_like(W)
        for idx in np.ndindex(W.shape):
            saved = W[idx]
            W[idx] = saved + h
            up = _total_loss(params, r, activation)
            W[idx] = saved - h
            down = _total_loss(params, r, activation)
            W[idx] = saved
            numeric[idx] = (up - down) / (2 * h)
        diff = np.abs(grads[key] - numeric)
        rel = np.linalg.norm(grads[key] - numeric) / (
            np.linalg.norm(grads[key]) + np.linalg.norm(numeric)
        )
        worst = np.unravel_index(np.argmax(diff), diff.shape)
        assert rel < 1e-6, (
            f"{activation} d{key}: relative error {rel:.2e}, largest abs diff "
            f"{diff.max():.2e} at index {worst}"
        )


def test_backward_unused_rows_get_zero_data_gradient():
    """Rows outside the batch get no data gradient (only L2 makes them move)."""
    params, _ = _gradcheck_setup("tanh")
    _, cache = mlp.forward(params, GC_U, GC_I, "tanh")

    grads = mlp.backward(params, cache, np.ones(len(GC_U)), "tanh")

    # users 0..3 all appear; items 3 never appears
    np.testing.assert_array_equal(grads["Q"][3], 0.0)
    assert grads["bi"][3] == 0.0
    assert np.all(grads["Q"][[0, 1, 2, 4]] != 0.0)


def test_backward_keeps_float32():
    """float32 params and dr_hat give float32 grads (no float64 hot path)."""
    params = mlp.init_params(6, 7, 4, (5, 3), np.random.default_rng(0))
    u, i = np.array([0, 5, 5]), np.array([6, 1, 6])
    r_hat, cache = mlp.forward(params, u, i, "sigmoid")

    grads = mlp.backward(params, cache, np.ones(3, np.float32), "sigmoid")

    assert r_hat.dtype == np.float32
    assert {key: g.dtype for key, g in grads.items()} == dict.fromkeys(
        params, np.dtype(np.float32)
    )


def test_linear_activation_model_has_no_user_item_interaction():
    """With linear hidden layers r_hat(u, i) = g(u) + h(i) for any weights.

    The whole network is then affine in x = [P[u], Q[i], bu[u], bi[i]], so
    the interaction contrast r(u, i) - r(u, j) - r(v, i) + r(v, j) is 0.
    """
    params, _ = _gradcheck_setup("linear")
    u, i = np.array([0, 0, 3, 3]), np.array([1, 4, 1, 4])

    r_hat, _ = mlp.forward(params, u, i, "linear")
    r_tanh, _ = mlp.forward(params, u, i, "tanh")

    assert r_hat[0] - r_hat[1] - r_hat[2] + r_hat[3] == pytest.approx(0.0, abs=1e-12)
    assert abs(r_tanh[0] - r_tanh[1] - r_tanh[2] + r_tanh[3]) > 1e-4


def test_make_binds_activation_and_rejects_unknown():
    """make(activation).forward/backward equal the functions with it bound."""
    params, r = _gradcheck_setup("tanh")
    core = mlp.make("tanh")

    r_hat, cache = core.forward(params, GC_U, GC_I)
    expected, _ = mlp.forward(params, GC_U, GC_I, "tanh")

    np.testing.assert_array_equal(r_hat, expected)
    assert set(core.backward(params, cache, r_hat - r)) == set(params)
    with pytest.raises(ValueError, match="activation must be one of .* got 'softmax'"):
        mlp.make("softmax")


# ---------------------------------------------------------------- estimator


def _synthetic(seed=0, n_users=30, n_items=20, density=0.6):
    """Ratings 3 + a_u + b_i + a_u b_i on a random subset of pairs.

    The additive part is what a linear-activation network can fit (it is
    affine in x, so it cannot form the product); the product is what the
    nonlinear ones can add.
    """
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-1, 1, n_users), rng.uniform(-1, 1, n_items)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    X = np.stack([users + 100, items + 1000], axis=1)  # raw ids, not indices
    y = 3.0 + a[users] + b[items] + a[users] * b[items]
    return X, y


def _small(**overrides):
    kwargs = dict(n_factors=4, hidden=(8, 4), n_epochs=3, batch_size=16, seed=0)
    return DeepRegressor(**{**kwargs, **overrides})


def test_deep_regressor_registered_as_deep():
    """MODELS['deep'] is DeepRegressor with the tutorial defaults."""
    model = MODELS["deep"]()
    assert isinstance(model, DeepRegressor) and model.model_name == "deep"
    tutorial = {
        "n_factors": 200, "hidden": (2048, 256), "activation": "linear",
        "n_epochs": 65, "batch_size": 512, "learning_rate": None, "optimizer": "sgd",
        "l2": 0.01, "loss": "rmse", "seed": None,
    }  # fmt: skip
    params = model.get_params()
    assert {k: params[k] for k in tutorial} == tutorial
    # the options beyond the tutorial default to the tutorial's behaviour
    assert {k: params[k] for k in set(params) - set(tutorial)} == {
        "l2_dense": 0.0, "penalty": "table", "l2_bias": None, "lr_decay": 1.0,
        "bias_lr_scale": 1.0, "init_std": None, "validation_fraction": None,
        "patience": 4, "refit": False, "clip": False, "average_epochs": 1,
    }  # fmt: skip


def test_deep_regressor_fit_returns_self_predict_shape():
    """fit returns self; predict gives one float per pair, shape (n,)."""
    X, y = _synthetic()
    model = _small()

    assert model.fit(X, y) is model
    pred = model.predict(X[:7])
    assert pred.shape == (7,) and np.all(np.isfinite(pred))
    assert len(model.history_) == 3


def test_deep_regressor_predict_before_fit_raises():
    """predict before fit raises NotFittedError."""
    with pytest.raises(NotFittedError, match="not fitted"):
        _small().predict(np.array([[1, 2]]))


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_deep_regressor_same_seed_same_result(activation):
    """One seed gives identical parameters, history losses and predictions."""
    X, y = _synthetic()
    a = _small(activation=activation, optimizer="adamax").fit(X, y)
    b = _small(activation=activation, optimizer="adamax").fit(X, y)

    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert [h["loss"] for h in a.history_] == [h["loss"] for h in b.history_]
    for key in a.params_:
        np.testing.assert_array_equal(a.params_[key], b.params_[key])


def test_deep_regressor_different_seeds_differ():
    """Two seeds give different initial weights, hence different predictions."""
    X, y = _synthetic()
    a = _small(n_epochs=1, seed=0).fit(X, y)
    b = _small(n_epochs=1, seed=1).fit(X, y)
    assert not np.array_equal(a.predict(X), b.predict(X))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_deep_regressor_loss_falls(activation):
    """Over 8 Adamax epochs on synthetic data the loss and train RMSE fall."""
    X, y = _synthetic()
    model = _small(activation=activation, optimizer="adamax", learning_rate=0.01,
                   n_epochs=8, l2=0.0)  # fmt: skip

    model.fit(X, y)

    losses = [h["loss"] for h in model.history_]
    train_rmse = [h["rmse"] for h in model.history_]
    assert losses[-1] < 0.8 * losses[0]
    assert train_rmse[-1] < train_rmse[0]
    # well below predicting the mean everywhere (RMSE = std(y) = 0.88)
    assert train_rmse[-1] < 0.8 * np.std(y)


def test_deep_regressor_save_load_identical_predictions(tmp_path):
    """save_model -> load_model keeps hyperparameters and predictions exactly."""
    X, y = _synthetic()
    model = _small(activation="tanh", hidden=[5, 3, 2]).fit(X, y)
    path = tmp_path / "deep.npz"

    save_model(model, path)
    loaded, _ = load_model(path)

    assert isinstance(loaded, DeepRegressor)
    assert loaded.activation == "tanh" and tuple(loaded.hidden) == (5, 3, 2)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert set(loaded.params_) == {"P", "Q", "bu", "bi"} | {
        f"{p}{n}" for p in "Wb" for n in (1, 2, 3, 4)
    }


def test_deep_regressor_layer_table_total_ml100k():
    """Tutorial model on ml-100k's 943 users and 1682 items has 1,877,770."""
    rows = DeepRegressor().layer_table(943, 1682)

    # embeddings (943 + 1682) * 201 = 527,625; dense 402*2048 + 2048 = 825,344,
    # 2048*256 + 256 = 524,544, 256 + 1 = 257
    assert sum(row[2] for row in rows) == 1_877_770
    counts = {name: n for name, _, n in rows}
    assert counts["dense1 (Dense, linear)"] == 825_344
    assert counts["dense2 (Dense, linear)"] == 524_544
    assert counts["dense3 (Dense, linear)"] == 257


def test_deep_regressor_layer_table_matches_init_params():
    """layer_table's total equals the number of entries init_params makes."""
    model = DeepRegressor(n_factors=5, hidden=(7, 3), activation="relu")
    params = model._init_params(11, 13, np.random.default_rng(0))

    rows = model.layer_table(11, 13)

    assert sum(row[2] for row in rows) == sum(W.size for W in params.values())
    # hidden layers show the activation, the output layer is linear
    assert [r[0] for r in rows if "Dense" in r[0]] == [
        "dense1 (Dense, relu)", "dense2 (Dense, relu)", "dense3 (Dense, linear)",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"hidden": 2048}, TypeError, r"hidden must be a list or tuple .* int 2048"),
        ({"hidden": ()}, ValueError, r"hidden must hold at least one layer width"),
        ({"hidden": (8, 0)}, ValueError, r"hidden widths must be >= 1, got 0"),
        ({"hidden": (8, 2.5)}, TypeError, r"hidden must hold integers, got 2.5"),
        ({"hidden": (True, 4)}, TypeError, r"hidden must hold integers, got True"),
        ({"activation": "softmax"}, ValueError, r"activation must be one of .*"),
        ({"n_factors": 0}, ValueError, r"n_factors must be an integer >= 1, got 0"),
        ({"optimizer": "adam"}, ValueError, r"optimizer must be one of"),
    ],
)
def test_deep_regressor_rejects_bad_hyperparameters(overrides, error, match):
    """fit names the bad hyperparameter, its value and what was expected."""
    X, y = _synthetic()
    with pytest.raises(error, match=match):
        _small(**overrides).fit(X, y)


def test_deep_regressor_init_stores_hyperparameters_unchanged():
    """__init__ keeps a list as a list; validation waits for fit."""
    model = DeepRegressor(hidden=[16, 8], activation="nonsense")
    assert model.hidden == [16, 8] and model.activation == "nonsense"


@pytest.mark.parametrize("hidden", [(6,), (6, 4), (8, 5, 3)])
def test_linear_predict_equals_forward(hidden):
    """The contracted linear prediction equals the layer-by-layer forward."""
    rng = np.random.default_rng(3)
    params = mlp.init_params(5, 7, 3, hidden, rng)
    for key in params:  # move biases away from zero
        params[key] += rng.normal(scale=0.1, size=params[key].shape).astype(np.float32)
    u = np.array([0, 4, 4, 2])
    i = np.array([6, 0, 6, 3])
    core = mlp.make("linear")
    r_hat, _ = core.forward(params, u, i)
    np.testing.assert_allclose(core.predict(params, u, i), r_hat, rtol=1e-5, atol=1e-6)
    relu = mlp.make("relu")
    np.testing.assert_array_equal(
        relu.predict(params, u, i), relu.forward(params, u, i)[0]
    )
