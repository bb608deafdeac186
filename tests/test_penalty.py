"""Tests of L2Penalty: whole-table and per-rating (batch rows) regularisation."""

import numpy as np
import pytest

from npmf.optim import L2Penalty, add_l2_grads, l2_penalty


def params64():
    rng = np.random.default_rng(0)
    return {
        "P": rng.normal(size=(4, 3)),
        "Q": rng.normal(size=(5, 3)),
        "bu": rng.normal(size=4),
        "bi": rng.normal(size=5),
        "W1": rng.normal(size=(8, 2)),
        "b1": rng.normal(size=2),
    }


USERS = np.array([0, 0, 3])
ITEMS = np.array([4, 1, 4])


def test_table_mode_equals_tutorial_penalty():
    """penalty='table' with one weight is the tutorial's whole-table L2."""
    params = params64()
    emb = {k: params[k] for k in ("P", "Q", "bu", "bi")}
    pen = L2Penalty(0.01)
    assert pen.is_tutorial
    assert pen.value(emb, USERS, ITEMS) == pytest.approx(l2_penalty(emb, 0.01))
    a = pen.add_grads({k: np.zeros_like(v) for k, v in emb.items()}, emb, USERS, ITEMS)
    b = add_l2_grads({k: np.zeros_like(v) for k, v in emb.items()}, emb, 0.01)
    for key in emb:
        np.testing.assert_allclose(a[key], b[key])


def test_rows_mode_hand_worked():
    """Rows mode: user 0 twice, user 3 once, over a batch of 3."""
    params = {
        "P": np.array([[1.0, 2.0], [9, 9], [9, 9], [0.0, 3.0]]),
        "Q": np.zeros((5, 2)),
        "bu": np.array([1.0, 9, 9, 2.0]),
        "bi": np.zeros(5),
    }
    pen = L2Penalty(0.1, penalty="rows", l2_bias=0.5)
    # P rows: |P0|^2 = 5 twice, |P3|^2 = 9 -> 0.1 * 19 / 3; bu: 1 + 1 + 4 -> 0.5 * 6 / 3
    assert pen.value(params, USERS, ITEMS) == pytest.approx(0.1 * 19 / 3 + 0.5 * 6 / 3)
    grads = pen.add_grads(
        {k: np.zeros_like(v) for k, v in params.items()}, params, USERS, ITEMS
    )
    # dP[0] = 2 * 0.1 / 3 * 2 * [1, 2]; rows 1 and 2 not in the batch: 0
    np.testing.assert_allclose(grads["P"][0], 0.4 / 3 * np.array([1.0, 2.0]))
    np.testing.assert_allclose(grads["P"][1:3], 0.0)
    # dbu[0] = 2 * 0.5 / 3 * 2 * 1; dbu[3] = 2 * 0.5 / 3 * 1 * 2
    np.testing.assert_allclose(grads["bu"], [2 / 3, 0, 0, 2 / 3])


@pytest.mark.parametrize("penalty", ["table", "rows"])
def test_penalty_grad_central_differences(penalty):
    """Every key's penalty gradient equals float64 central differences."""
    params = params64()
    pen = L2Penalty(0.03, penalty=penalty, l2_bias=0.007, l2_dense=0.002)
    grads = pen.add_grads(
        {k: np.zeros_like(v) for k, v in params.items()}, params, USERS, ITEMS
    )
    h = 1e-6
    for key, W in params.items():
        numeric = np.zeros_like(W)
        for idx in np.ndindex(W.shape):
            old = W[idx]
            W[idx] = old + h
            up = pen.value(params, USERS, ITEMS)
            W[idx] = old - h
            down = pen.value(params, USERS, ITEMS)
            W[idx] = old
            numeric[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(grads[key], numeric, atol=1e-8, err_msg=key)
    assert not np.any(grads["b1"])  # dense biases are never penalised
