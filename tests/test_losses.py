"""Tests of the losses and metrics."""

import numpy as np
import pytest

from npmf.losses import get_loss, mse_loss, rmse_loss
from npmf.metrics import mae, rmse


def test_rmse_loss_hand_worked():
    """RMSE and its gradient e / (batch * loss) on three residuals."""
    r_hat = np.array([1.6, 3.6, 5.8])
    r = np.array([2.0, 5.0, 6.0])
    loss, dr_hat = rmse_loss(r_hat, r)
    # e = [-0.4, -1.4, -0.2]; mean(e^2) = (0.16 + 1.96 + 0.04) / 3 = 0.72
    assert loss == pytest.approx(np.sqrt(0.72))
    # dr_hat = e / (3 * sqrt(0.72)) = e / 2.5455844
    np.testing.assert_allclose(
        dr_hat, np.array([-0.4, -1.4, -0.2]) / 2.5455844, rtol=1e-6
    )


def test_mse_loss_hand_worked():
    """MSE and its gradient 2 e / batch."""
    loss, dr_hat = mse_loss(np.array([1.6, 3.6, 5.8]), np.array([2.0, 5.0, 6.0]))
    assert loss == pytest.approx(0.72)
    np.testing.assert_allclose(dr_hat, [-0.8 / 3, -2.8 / 3, -0.4 / 3])


@pytest.mark.parametrize("loss_fn", [rmse_loss, mse_loss])
def test_loss_refuses_broadcast_shapes(loss_fn):
    """(n,) against (n, 1) raises instead of broadcasting to (n, n)."""
    with pytest.raises(ValueError, match=r"r_hat \(3,\) and r \(3, 1\)"):
        loss_fn(np.zeros(3), np.zeros((3, 1)))


def test_metrics_refuse_broadcast_and_empty():
    """Metrics need equal 1-D shapes and at least one rating."""
    with pytest.raises(ValueError, match=r"\(4,\) and \(4, 1\)"):
        rmse(np.zeros(4), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="at least one rating"):
        mae(np.zeros(0), np.zeros(0))


def test_metrics_hand_worked():
    """RMSE and MAE of residuals 1, -1, 2: sqrt(6/3) and 4/3."""
    assert rmse([1, 1, 2], [0, 2, 0]) == pytest.approx(np.sqrt(2.0))
    assert mae([1, 1, 2], [0, 2, 0]) == pytest.approx(4 / 3)


def test_get_loss_unknown_name():
    """An unknown loss name is rejected with the choices."""
    with pytest.raises(ValueError, match="loss must be one of"):
        get_loss("mae")
