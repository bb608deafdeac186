"""The fast training path equals the reference path.

Tolerances (float32 rounding; the two paths sum in different orders):
parameters after two epochs ``rtol=1e-4, atol=1e-6`` under SGD and
``rtol=1e-4, atol=2e-5`` under Adamax; logged epoch losses ``rtol=1e-6``.

NOTE: Adamax is looser in ``atol`` because its step ``lr m / (v + eps)`` is
about ``lr`` whenever ``|g|`` is near ``eps``: there a float32 rounding
difference in a tiny gradient moves the weight by a visible fraction of
``lr`` (``KERAS_SEMANTICS.md`` section 8 sees the same drift against Keras).
"""

import copy

import numpy as np
import pytest

from npmf import fast
from npmf.fast import batching, engines
from npmf.losses import get_loss
from npmf.models import mf, mlp
from npmf.optim import SGD, make_optimizer
from npmf.train import fit_loop, run_epoch

N_USERS, N_ITEMS, N_RATINGS, K = 30, 40, 1000, 8
BATCH = 64  # 1000 = 15 * 64 + 40: a partial last batch


@pytest.fixture(scope="module")
def ratings():
    """Ratings with many repeated ids per batch (30 users, 40 items)."""
    rng = np.random.default_rng(0)
    u = rng.integers(0, N_USERS, N_RATINGS).astype(np.int32)  # (n,)
    i = rng.integers(0, N_ITEMS, N_RATINGS).astype(np.int32)  # (n,)
    r = rng.normal(0.0, 1.0, N_RATINGS).astype(np.float32)  # (n,)
    return u, i, r


def _model(name):
    if name == "mf":
        return mf, mf.init_params(N_USERS, N_ITEMS, K, np.random.default_rng(2))
    activation = name.split("-")[1]
    params = mlp.init_params(N_USERS, N_ITEMS, K, (16, 8), np.random.default_rng(2))
    return mlp.make(activation), params


def _train(name, optimizer, engine, ratings, loss="rmse", n_epochs=2):
    core, params = _model(name)
    u, i, r = ratings
    opt = make_optimizer(optimizer, 0.05 if optimizer == "sgd" else 0.01)
    rng = np.random.default_rng(1)
    losses = [
        run_epoch(
            core,
            params,
            opt,
            u,
            i,
            r,
            batch_size=BATCH,
            loss_fn=get_loss(loss),
            l2=0.01,
            order=rng.permutation(len(r)),
            epoch=epoch,
            engine=engine,
        )
        for epoch in range(1, n_epochs + 1)
    ]
    return params, opt, losses


def _assert_params_close(ours, ref, atol):
    for key in ref:
        np.testing.assert_allclose(
            ours[key], ref[key], rtol=1e-4, atol=atol, err_msg=f"parameter {key}"
        )


CASES = [
    ("mf", "sgd", "rmse"),
    ("mf", "sgd", "mse"),
    ("mf", "adamax", "rmse"),
    ("deep-linear", "sgd", "rmse"),
    ("deep-linear", "sgd", "mse"),
    ("deep-linear", "adamax", "rmse"),
    ("deep-relu", "sgd", "rmse"),
    ("deep-relu", "adamax", "rmse"),
    ("deep-tanh", "sgd", "mse"),
]


@pytest.mark.parametrize(("name", "optimizer", "loss"), CASES)
def test_fast_equals_reference(ratings, name, optimizer, loss):
    """Two epochs (32 steps, partial last batch, repeated ids) agree.

    Checks every parameter, the logged epoch losses and the optimizer state
    (step count; Adamax moments).
    """
    ref_params, ref_opt, ref_losses = _train(
        name, optimizer, "reference", ratings, loss
    )
    params, opt, losses = _train(name, optimizer, "fast", ratings, loss)
    atol = 1e-6 if optimizer == "sgd" else 2e-5
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
    _assert_params_close(params, ref_params, atol)
    assert opt.iterations == ref_opt.iterations == 32
    if optimizer == "adamax":
        _assert_params_close(opt.m, ref_opt.m, atol)
        _assert_params_close(opt.v, ref_opt.v, atol)


@pytest.mark.parametrize("name", ["mf", "deep-linear"])
def test_fast_sgd_scale_fold_and_resync_keep_result(ratings, name, monkeypatch):
    """Folding the lazy scale in every few steps changes nothing.

    With RESCALE_BELOW just under 1 the scale is folded into the tables
    after every step and the running sum of squares recomputed, so this run
    takes the fold path the long epochs take.
    """
    ref_params, _, ref_losses = _train(name, "sgd", "reference", ratings)
    monkeypatch.setattr(engines, "RESCALE_BELOW", 0.99999)
    monkeypatch.setattr(engines, "RESYNC_STEPS", 3)
    params, _, losses = _train(name, "sgd", "fast", ratings)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
    _assert_params_close(params, ref_params, 1e-6)


def test_fast_path_is_selected_where_it_exists():
    """MF and the deep model get an engine under SGD and Adamax; others not."""
    for name in ("mf", "deep-linear", "deep-relu"):
        core, params = _model(name)
        for optimizer in ("sgd", "adamax"):
            opt = make_optimizer(optimizer)
            assert fast.select_engine(core, params, opt, BATCH) is not None

    # a subclassed optimizer may change step(): reference path
    class MySGD(SGD):
        pass

    core, params = _model("mf")
    assert fast.select_engine(core, params, MySGD(), BATCH) is None
    # float64 tables: reference path
    params64 = {key: W.astype(np.float64) for key, W in params.items()}
    assert fast.select_engine(core, params64, SGD(), BATCH) is None


def test_fit_loop_engines_agree(ratings):
    """fit_loop's history (loss, rmse, val_loss, val_rmse) matches."""
    u, i, r = ratings
    histories = {}
    for engine in ("reference", "auto"):
        rng = np.random.default_rng(4)
        params = mf.init_params(N_USERS, N_ITEMS, K, rng)
        histories[engine] = fit_loop(
            mf,
            params,
            make_optimizer("sgd"),
            (u, i, r),
            n_epochs=2,
            batch_size=BATCH,
            loss="rmse",
            l2=0.01,
            rng=rng,
            validation=(u[:100], i[:100], r[:100]),
            engine=engine,
        )
    for ref, ours in zip(histories["reference"], histories["auto"]):
        for key in ("loss", "rmse", "val_loss", "val_rmse"):
            assert ours[key] == pytest.approx(ref[key], rel=1e-6), key


def test_scatter_rows_accumulates_repeated_ids():
    """scatter_rows equals np.add.at with repeated output rows.

    Hand check of one row: out row 1 gets 2 * src[0] + 3 * src[2] from the
    terms (1, 0, 2.0) and (1, 2, 3.0).
    """
    rng = np.random.default_rng(0)
    src = rng.normal(size=(4, 5)).astype(np.float32)  # (4, 5)
    out_rows = np.array([1, 0, 1, 3], dtype=np.int32)
    src_rows = np.array([0, 1, 2, 2], dtype=np.int32)
    weights = np.array([2.0, -1.0, 3.0, 0.5], dtype=np.float32)
    out = np.zeros((4, 5), dtype=np.float32)  # (4, 5)
    batching.scatter_rows(out, out_rows, weights, src, src_rows)

    expected = np.zeros((4, 5), dtype=np.float32)  # (4, 5)
    np.add.at(expected, out_rows, weights[:, None] * src[src_rows])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(out[1], 2 * src[0] + 3 * src[2], rtol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 3, 4, 64])
def test_epoch_batches_layout(ratings, batch_size):
    """Each batch's distinct rows and compact ids rebuild its ids exactly."""
    u, i, r = ratings
    n = 203  # not a multiple of 3, 4 or 64
    order = np.random.default_rng(0).permutation(n)
    seen = 0
    for batch in batching.epoch_batches(
        u[:n], i[:n], r[:n], order, batch_size, N_USERS, N_ITEMS
    ):
        ub, ib, rb, cu, uq, ci, iq, joint = batch
        sel = order[seen : seen + len(ub)]
        np.testing.assert_array_equal(ub, u[sel])
        np.testing.assert_array_equal(r[sel], rb)
        np.testing.assert_array_equal(uq, np.unique(ub))
        np.testing.assert_array_equal(iq, np.unique(ib))
        np.testing.assert_array_equal(uq[cu], ub)
        np.testing.assert_array_equal(iq[ci], ib)
        stacked = np.concatenate([uq, iq + N_USERS])  # rows of both tables
        np.testing.assert_array_equal(
            stacked[joint], np.concatenate([ub, ib + N_USERS])
        )
        seen += len(ub)
    assert seen == n


def test_fast_params_are_true_weights_after_epoch(ratings):
    """After run_epoch the tables hold true weights (scale folded back)."""
    core, params = _model("mf")
    ref = copy.deepcopy(params)
    u, i, r = ratings
    run_epoch(
        core,
        params,
        SGD(),
        u,
        i,
        r,
        batch_size=BATCH,
        loss_fn=get_loss("rmse"),
        l2=0.01,
        engine="fast",
    )
    run_epoch(
        core,
        ref,
        SGD(),
        u,
        i,
        r,
        batch_size=BATCH,
        loss_fn=get_loss("rmse"),
        l2=0.01,
        engine="reference",
    )
    # the untouched-row shrink (1 - 2 lr l2)^steps is in the tables
    _assert_params_close(params, ref, 1e-6)


def test_partial_epoch_order_agrees(ratings):
    """An order covering part of the samples trains on exactly those samples."""
    u, i, r = ratings
    order = np.random.default_rng(3).permutation(len(r))[:300]
    out = {}
    for engine in ("reference", "fast"):
        core, params = _model("mf")
        loss = run_epoch(
            core,
            params,
            SGD(),
            u,
            i,
            r,
            batch_size=BATCH,
            loss_fn=get_loss("rmse"),
            l2=0.01,
            order=order,
            engine=engine,
        )
        out[engine] = params, loss
    assert out["fast"][1] == pytest.approx(out["reference"][1], rel=1e-6)
    _assert_params_close(out["fast"][0], out["reference"][0], 1e-6)
