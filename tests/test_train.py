"""Trainer properties: batching, epoch loss, seeding, divergence, engines."""

import numpy as np
import pytest

from npmf.losses import get_loss
from npmf.models import mf
from npmf.optim import SGD, make_optimizer
from npmf.train import (
    TrainingDivergedError,
    batches,
    fit_loop,
    permutation,
    run_epoch,
)


class ConstantCore:
    """A model core predicting ``w`` for every pair; records batch sizes."""

    def __init__(self):
        self.sizes = []

    def forward(self, params, u, i):
        self.sizes.append(len(u))
        r_hat = np.zeros(len(u), dtype=np.float32) + params["w"][0]  # (batch,)
        return r_hat, None

    def backward(self, params, cache, dr_hat):
        return {"w": np.zeros(1, dtype=np.float32)}


def _tiny_ratings(n=50, n_users=6, n_items=7, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, n_users, n).astype(np.int32)  # (n,)
    i = rng.integers(0, n_items, n).astype(np.int32)  # (n,)
    r = rng.normal(0.0, 1.0, n).astype(np.float32)  # (n,)
    return u, i, r


def test_batches_keep_last_partial_batch():
    """Ten samples in batches of four give 4, 4 and a kept partial 2."""
    assert list(batches(10, 4)) == [(0, 4), (4, 8), (8, 10)]


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_run_epoch_last_partial_batch_is_a_step(engine):
    """The short last batch is trained on: ceil(n / batch_size) steps."""
    u, i, r = _tiny_ratings(n=10)
    params = mf.init_params(6, 7, 3, np.random.default_rng(0))
    optimizer = SGD()
    run_epoch(
        mf,
        params,
        optimizer,
        u,
        i,
        r,
        batch_size=4,
        loss_fn=get_loss("rmse"),
        l2=0.01,
        engine=engine,
    )
    assert optimizer.iterations == 3


def test_run_epoch_loss_weighted_by_batch_size():
    """Epoch loss is sum_b B_b loss_b / n, not the plain mean over batches.

    With r_hat = 0 and l2 = 0 the batch RMSEs are the targets' sizes:
    batches [1, 1, 1, 1], [2, 2, 2, 2], [4, 4] give 1, 2 and 4, so the
    weighted mean is (4 * 1 + 4 * 2 + 2 * 4) / 10 = 2.0 (the plain mean
    would be 7 / 3).
    """
    r = np.array([1, 1, 1, 1, 2, 2, 2, 2, 4, 4], dtype=np.float32)  # (10,)
    idx = np.zeros(10, dtype=np.int32)  # (10,)
    core = ConstantCore()
    params = {"w": np.zeros(1, dtype=np.float32)}
    # r_hat - r = -r, so the RMSE of a batch of equal targets is that target
    loss = run_epoch(
        core, params, SGD(), idx, idx, r, batch_size=4, loss_fn=get_loss("rmse"), l2=0.0
    )
    assert core.sizes == [4, 4, 2]
    assert loss == pytest.approx(2.0, rel=1e-7)


@pytest.mark.parametrize("engine", ["reference", "auto"])
def test_fit_loop_one_seed_one_result(engine):
    """Two runs from the same seed give bit-identical weights and history."""
    u, i, r = _tiny_ratings(n=200)

    def run():
        rng = np.random.default_rng(7)
        params = mf.init_params(6, 7, 4, rng)
        history = fit_loop(
            mf,
            params,
            make_optimizer("sgd"),
            (u, i, r),
            n_epochs=2,
            batch_size=32,
            loss="rmse",
            l2=0.01,
            rng=rng,
            validation=(u[:20], i[:20], r[:20]),
            engine=engine,
        )
        return params, [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    (params_a, hist_a), (params_b, hist_b) = run(), run()
    assert hist_a == hist_b
    for key in params_a:
        np.testing.assert_array_equal(params_a[key], params_b[key])


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_divergence_raises_naming_epoch_and_batch(engine):
    """A non-finite batch loss raises TrainingDivergedError with its place."""
    u, i, r = _tiny_ratings(n=64)
    params = mf.init_params(6, 7, 4, np.random.default_rng(0))
    optimizer = SGD(learning_rate=1e30)
    with pytest.raises(TrainingDivergedError, match=r"at epoch 3, batch \d+ .*lower"):
        with np.errstate(all="ignore"):
            run_epoch(
                mf,
                params,
                optimizer,
                u,
                i,
                r,
                batch_size=8,
                loss_fn=get_loss("rmse"),
                l2=0.01,
                epoch=3,
                engine=engine,
            )


def test_divergence_same_batch_on_both_engines():
    """Both engines stop at the same batch of a diverging run."""
    u, i, r = _tiny_ratings(n=64)
    messages = []
    for engine in ("reference", "fast"):
        params = mf.init_params(6, 7, 4, np.random.default_rng(0))
        with pytest.raises(TrainingDivergedError) as info:
            with np.errstate(all="ignore"):
                run_epoch(
                    mf,
                    params,
                    SGD(learning_rate=1e30),
                    u,
                    i,
                    r,
                    batch_size=8,
                    loss_fn=get_loss("rmse"),
                    l2=0.01,
                    engine=engine,
                )
        messages.append(str(info.value).split(" with ")[0].split("at ")[1])
    assert messages[0] == messages[1]


def test_run_epoch_unknown_engine_raises():
    """An engine name outside auto/fast/reference is refused."""
    u, i, r = _tiny_ratings(n=8)
    params = mf.init_params(6, 7, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="engine must be one of"):
        run_epoch(
            mf,
            params,
            SGD(),
            u,
            i,
            r,
            batch_size=4,
            loss_fn=get_loss("rmse"),
            l2=0.0,
            engine="turbo",
        )


def test_run_epoch_fast_without_fast_path_raises():
    """engine='fast' refuses a model core it has no exact fast path for."""
    params = {"w": np.zeros(1, dtype=np.float32)}
    idx = np.zeros(4, dtype=np.int32)
    r = np.ones(4, dtype=np.float32)
    with pytest.raises(ValueError, match="no exact fast path"):
        run_epoch(
            ConstantCore(),
            params,
            SGD(),
            idx,
            idx,
            r,
            batch_size=2,
            loss_fn=get_loss("rmse"),
            l2=0.0,
            engine="fast",
        )


@pytest.mark.parametrize("n", [1, 2, 10, 1001])
def test_permutation_is_rng_permutation(n):
    """The int32 shuffle equals rng.permutation(n) and leaves the same state."""
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    order = permutation(rng_a, n)
    np.testing.assert_array_equal(order, rng_b.permutation(n))
    assert order.dtype == np.int32
    assert rng_a.bit_generator.state == rng_b.bit_generator.state
