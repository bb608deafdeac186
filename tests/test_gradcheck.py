"""Tests of npmf.gradcheck: central differences against every gradient."""

import numpy as np
import pytest

from npmf import gradcheck
from npmf.cli import main
from npmf.losses import get_loss
from npmf.models import mf
from npmf.optim import SGD
from npmf.train import train_step


@pytest.mark.parametrize("loss", ["rmse", "mse"])
def test_gradcheck_mf_within_tolerance(loss):
    """Every MF gradient, penalty included, matches float64 differences."""
    core, params, u, i, r = gradcheck.tiny_problem("mf")
    errors = gradcheck.check_gradients(core, params, u, i, r, loss=loss)
    assert set(errors) == {"P", "Q", "bu", "bi"}
    for key, err in errors.items():
        assert err < gradcheck.GRADCHECK_TOLERANCE, f"{key}: relative error {err:.2e}"


@pytest.mark.parametrize("activation", ["linear", "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("loss", ["rmse", "mse"])
def test_gradcheck_deep_within_tolerance(activation, loss):
    """Every deep-model gradient matches float64 differences."""
    core, params, u, i, r = gradcheck.tiny_problem("deep", activation)
    errors = gradcheck.check_gradients(core, params, u, i, r, loss=loss)
    assert set(errors) == set(params)
    for key, err in errors.items():
        assert err < gradcheck.GRADCHECK_TOLERANCE, f"{key}: relative error {err:.2e}"


def test_gradcheck_tiny_batch_repeats_ids():
    """The batch repeats a user, an item and a pair, and skips a user."""
    u, i = gradcheck.TINY_U, gradcheck.TINY_I
    assert np.bincount(u).max() >= 2 and np.bincount(i).max() >= 2
    pairs = list(zip(u.tolist(), i.tolist()))
    assert len(set(pairs)) < len(pairs)
    # user 2 gets only the penalty gradient
    assert 2 not in set(u.tolist())


def test_gradcheck_relu_draw_uses_both_sides_of_kink():
    """The relu problem has active and inactive units, none near 0."""
    core, params, u, i, _ = gradcheck.tiny_problem("deep", "relu")
    _, (_, _, inputs) = core.forward(params, u, i)
    hidden = np.concatenate([a.ravel() for a in inputs[1:]])
    assert np.any(hidden == 0) and np.any(hidden > 1e-3)


class _BrokenMF:
    """MF core whose bias gradient forgets the repeated-id sum."""

    forward = staticmethod(mf.forward)

    @staticmethod
    def backward(params, cache, dr_hat):
        grads = mf.backward(params, cache, dr_hat)
        u = cache[0]
        # wrong on purpose: assignment keeps only the last repeated id
        grads["bu"] = np.zeros_like(params["bu"])
        grads["bu"][u] = dr_hat
        return grads


def test_gradcheck_detects_lost_repeated_id():
    """A scatter that drops repeated ids fails the check on bu only."""
    _, params, u, i, r = gradcheck.tiny_problem("mf")
    errors = gradcheck.check_gradients(_BrokenMF, params, u, i, r)
    assert errors["bu"] > 1e-2
    assert max(errors[key] for key in ("P", "Q", "bi")) < gradcheck.GRADCHECK_TOLERANCE


def test_numerical_gradient_hand_worked():
    """d/dW sum(W^3) = 3 W^2, and W is restored afterwards."""
    W = np.array([[1.0, -2.0], [0.5, 3.0]])

    def f():
        return float(np.sum(W**3))

    numeric = gradcheck.numerical_gradient(f, W)
    # 3 * [[1, 4], [0.25, 9]] = [[3, 12], [0.75, 27]]
    np.testing.assert_allclose(numeric, [[3.0, 12.0], [0.75, 27.0]], rtol=1e-8)
    np.testing.assert_array_equal(W, [[1.0, -2.0], [0.5, 3.0]])


def test_relative_error_scales_by_largest_entry():
    """The error is the largest difference over the largest magnitude."""
    # differences 0.1 and 0.0; largest magnitude 4.0 -> 0.1 / 4 = 0.025
    err = gradcheck.relative_error(np.array([1.0, 4.0]), np.array([1.1, 4.0]))
    assert err == pytest.approx(0.025)
    assert gradcheck.relative_error(np.zeros(3), np.zeros(3)) == 0.0


def test_check_gradients_refuses_float32():
    """float32 parameters raise: differences at eps 1e-6 would be noise."""
    core, params, u, i, r = gradcheck.tiny_problem("mf")
    params["P"] = params["P"].astype(np.float32)
    with pytest.raises(TypeError, match="P is float32"):
        gradcheck.check_gradients(core, params, u, i, r)


@pytest.mark.parametrize("model,activation", [("mf", "linear"), ("deep", "relu")])
def test_loss_and_grads_equals_train_step(model, activation):
    """The checked gradient is the one a training step applies."""
    core, params, u, i, r = gradcheck.tiny_problem(model, activation)
    before = {key: W.copy() for key, W in params.items()}
    total, grads = gradcheck.loss_and_grads(core, params, u, i, r)

    # SGD with learning_rate 1 moves each W by exactly -grads[key]
    step_loss = train_step(core, params, SGD(1.0), u, i, r, get_loss("rmse"), 0.01)
    assert step_loss == pytest.approx(total, rel=1e-12)
    for key, W in params.items():
        np.testing.assert_allclose(before[key] - W, grads[key], rtol=1e-12, atol=0)


def test_make_core_refuses_unknown_model():
    """An unknown model name raises, naming the value."""
    with pytest.raises(ValueError, match="model must be 'mf' or 'deep', got 'svd'"):
        gradcheck.make_core("svd")


@pytest.mark.parametrize(
    "argv", [["--model", "mf"], ["--model", "deep", "--activation", "tanh"]]
)
def test_cli_gradcheck_reports_worst_error(argv, capsys):
    """``npmf gradcheck`` prints one row per key and exits 0 when within 1e-6."""
    code = main(["gradcheck", *argv])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert out[-1].startswith("worst_rel_error ") and out[-1].endswith(": ok")
    assert float(out[-1].split()[1]) < 1e-6
    assert any(line.startswith("P ") for line in out)
