"""Tests of the MF math core: forward, backward and the whole-table penalty."""

import numpy as np
import pytest

from npmf.losses import rmse_loss
from npmf.models import mf
from npmf.optim import add_l2_grads, l2_penalty


def tiny_params(dtype=np.float64):
    """Three users, two items, k = 2, with small integer values."""
    return {
        "P": np.array([[1.0, 2.0], [0.0, 1.0], [3.0, 0.0]], dtype=dtype),
        "Q": np.array([[1.0, 0.0], [2.0, 1.0]], dtype=dtype),
        "bu": np.array([0.1, 0.2, 0.3], dtype=dtype),
        "bi": np.array([0.5, -0.5], dtype=dtype),
    }


# user 0 appears twice, user 1 not at all
USERS = np.array([0, 0, 2])
ITEMS = np.array([0, 1, 1])


def test_forward_hand_worked():
    """The prediction is P[u].Q[i] + bu[u] + bi[i], row by row."""
    r_hat, _ = mf.forward(tiny_params(), USERS, ITEMS)
    # b0: [1,2].[1,0] = 1, + 0.1 + 0.5 = 1.6
    # b1: [1,2].[2,1] = 4, + 0.1 - 0.5 = 3.6
    # b2: [3,0].[2,1] = 6, + 0.3 - 0.5 = 5.8
    np.testing.assert_allclose(r_hat, [1.6, 3.6, 5.8])


def test_backward_hand_worked_repeated_user():
    """Repeated ids accumulate; rows not in the batch get zero data gradient."""
    params = tiny_params()
    _, cache = mf.forward(params, USERS, ITEMS)
    grads = mf.backward(params, cache, np.array([1.0, 2.0, -1.0]))
    # dP[0] = 1*Q[0] + 2*Q[1] = [1,0] + [4,2] = [5,2]; dP[2] = -1*Q[1] = [-2,-1]
    np.testing.assert_allclose(grads["P"], [[5, 2], [0, 0], [-2, -1]])
    # dQ[0] = 1*P[0] = [1,2]; dQ[1] = 2*P[0] - 1*P[2] = [2,4] - [3,0] = [-1,4]
    np.testing.assert_allclose(grads["Q"], [[1, 2], [-1, 4]])
    # dbu = [1 + 2, 0, -1]; dbi = [1, 2 - 1]
    np.testing.assert_allclose(grads["bu"], [3, 0, -1])
    np.testing.assert_allclose(grads["bi"], [1, 1])


def test_backward_shapes_match_params():
    """Every gradient has the shape and dtype of its parameter."""
    params = mf.init_params(7, 5, 4, np.random.default_rng(0))
    u = np.array([0, 6, 6, 3])
    i = np.array([4, 4, 0, 1])
    _, cache = mf.forward(params, u, i)
    grads = mf.backward(params, cache, np.ones(4, dtype=np.float32))
    for key, W in params.items():
        assert grads[key].shape == W.shape
        assert grads[key].dtype == np.float32


def test_penalty_whole_table_value():
    """The penalty is l2 * sum(W^2) over all rows of all four tables."""
    params = tiny_params()
    # P: 1+4+0+1+9+0 = 15; Q: 1+0+4+1 = 6; bu: .01+.04+.09 = .14; bi: .25+.25 = .5
    assert l2_penalty(params, 0.01) == pytest.approx(0.01 * (15 + 6 + 0.14 + 0.5))


def test_penalty_grad_on_rows_not_in_batch():
    """Rows outside the batch get exactly 2 * l2 * W from the penalty."""
    params = tiny_params()
    _, cache = mf.forward(params, USERS, ITEMS)
    grads = mf.backward(params, cache, np.array([1.0, 2.0, -1.0]))
    add_l2_grads(grads, params, 0.01)
    # user 1 is not in the batch: dP[1] = 0.02 * [0, 1], dbu[1] = 0.02 * 0.2
    np.testing.assert_allclose(grads["P"][1], [0.0, 0.02])
    np.testing.assert_allclose(grads["bu"][1], 0.004)
    # user 0 is: data gradient plus 0.02 * P[0]
    np.testing.assert_allclose(grads["P"][0], [5.02, 2.04])


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_full_gradient_matches_central_differences(batch):
    """RMSE loss plus penalty: analytic gradient equals float64 differences."""
    rng = np.random.default_rng(batch)
    params = {k: v.astype(np.float64) for k, v in mf.init_params(4, 3, 2, rng).items()}
    params = {k: v * 10 for k, v in params.items()}  # away from zero
    u = rng.integers(0, 4, batch)
    u[0] = u[-1]  # a repeated user when batch > 1
    i = rng.integers(0, 3, batch)
    r = rng.normal(size=batch)
    l2 = 0.01

    def total_loss():
        r_hat, _ = mf.forward(params, u, i)
        return rmse_loss(r_hat, r)[0] + l2_penalty(params, l2)

    r_hat, cache = mf.forward(params, u, i)
    _, dr_hat = rmse_loss(r_hat, r)
    grads = add_l2_grads(mf.backward(params, cache, dr_hat), params, l2)
    h = 1e-6
    for key, W in params.items():
        numeric = np.zeros_like(W)
        for idx in np.ndindex(W.shape):
            old = W[idx]
            W[idx] = old + h
            up = total_loss()
            W[idx] = old - h
            down = total_loss()
            W[idx] = old
            numeric[idx] = (up - down) / (2 * h)
        err = np.max(np.abs(numeric - grads[key])) / max(np.max(np.abs(numeric)), 1e-12)
        assert err < 1e-6, f"{key}: relative error {err:.2e}"


def test_init_like_keras_uniform():
    """Tables are float32, uniform on [-0.05, 0.05), sized by the counts."""
    params = mf.init_params(943, 1682, 200, np.random.default_rng(0))
    assert params["P"].shape == (943, 200) and params["bi"].shape == (1682,)
    for W in params.values():
        assert W.dtype == np.float32
        assert W.min() >= -0.05 and W.max() < 0.05
    # variance of USERS(-0.05, 0.05) is 0.1^2 / 12 = 8.333e-4, std 0.028868
    assert params["Q"].std() == pytest.approx(0.028868, rel=0.01)
