"""The fast training path equals the reference path.

Every penalty the fast path covers is compared: the tutorial's whole-table
L2, the per-rating ("rows") L2 with and without a bias weight, a split
whole-table bias weight (Adamax) and ``l2_dense``.

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
from npmf.optim import SGD, L2Penalty, make_optimizer
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


def _train(
    name,
    optimizer,
    engine,
    ratings,
    loss="rmse",
    n_epochs=2,
    l2=0.01,
    bias_lr_scale=1.0,
):
    core, params = _model(name)
    u, i, r = ratings
    lr = 0.05 if optimizer == "sgd" else 0.01
    opt = make_optimizer(optimizer, lr, bias_lr_scale=bias_lr_scale)
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
            l2=l2,
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


def _assert_fast_equals_reference(name, optimizer, ratings, **kwargs):
    """Train both engines alike; parameters, losses and state must agree.

    Returns the fast run's ``(params, opt, losses)``.
    """
    ref_params, ref_opt, ref_losses = _train(
        name, optimizer, "reference", ratings, **kwargs
    )
    params, opt, losses = _train(name, optimizer, "fast", ratings, **kwargs)
    atol = 1e-6 if optimizer == "sgd" else 2e-5
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
    _assert_params_close(params, ref_params, atol)
    assert opt.iterations == ref_opt.iterations == 32
    if optimizer == "adamax":
        _assert_params_close(opt.m, ref_opt.m, atol)
        _assert_params_close(opt.v, ref_opt.v, atol)
    return params, opt, losses


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
    _assert_fast_equals_reference(name, optimizer, ratings, loss=loss)


# penalties beyond the tutorial's; weights large enough to move the result
ROWS = L2Penalty(0.05, penalty="rows", l2_bias=0.01)
ROWS_NO_BIAS = L2Penalty(0.05, penalty="rows", l2_bias=0.0)
ROWS_DENSE = L2Penalty(0.05, penalty="rows", l2_bias=0.01, l2_dense=0.02)
TABLE_DENSE = L2Penalty(0.05, l2_dense=0.02)
TABLE_SPLIT_DENSE = L2Penalty(0.05, l2_bias=0.01, l2_dense=0.02)

PENALTY_CASES = [
    ("mf", "sgd", "mse", ROWS),
    ("mf", "sgd", "rmse", ROWS_NO_BIAS),
    ("mf", "adamax", "mse", ROWS),
    ("mf", "adamax", "rmse", ROWS_NO_BIAS),
    ("mf", "adamax", "rmse", TABLE_SPLIT_DENSE),
    ("deep-relu", "sgd", "mse", ROWS_DENSE),
    ("deep-relu", "sgd", "rmse", ROWS_DENSE),
    ("deep-relu", "adamax", "mse", ROWS_DENSE),
    ("deep-relu", "adamax", "rmse", ROWS_DENSE),
    ("deep-relu", "sgd", "mse", TABLE_DENSE),
    ("deep-relu", "adamax", "mse", TABLE_SPLIT_DENSE),
    ("deep-tanh", "adamax", "mse", ROWS_NO_BIAS),
    ("deep-linear", "sgd", "mse", ROWS),
    ("deep-linear", "sgd", "rmse", ROWS_DENSE),
    ("deep-linear", "adamax", "mse", ROWS_DENSE),
    ("deep-linear", "sgd", "mse", TABLE_DENSE),
]


def _penalty_id(penalty):
    return (
        f"{penalty.penalty}-bias{penalty.l2_bias}-dense{penalty.l2_dense}"
        if isinstance(penalty, L2Penalty)
        else str(penalty)
    )


@pytest.mark.parametrize(
    ("name", "optimizer", "loss", "penalty"),
    PENALTY_CASES,
    ids=[f"{n}-{o}-{lo}-{_penalty_id(p)}" for n, o, lo, p in PENALTY_CASES],
)
def test_fast_equals_reference_with_penalty(ratings, name, optimizer, loss, penalty):
    """Rows, split-bias and dense penalties: two epochs (32 steps) agree.

    Checks every parameter, the logged epoch losses (data loss plus
    ``L2Penalty.value`` at the pre-step weights, averaged over the steps)
    and the optimizer state, as for the tutorial's penalty.
    """
    _assert_fast_equals_reference(name, optimizer, ratings, loss=loss, l2=penalty)


def test_fast_rows_penalty_moves_only_batch_rows(ratings):
    """Under SGD the rows penalty leaves rows outside the batch untouched.

    One step on a batch of 64 ratings from users 0..9 only: every other row
    of ``P`` and ``bu`` keeps its value bit for bit (no lazy shrink), while
    the batch's rows moved; the fast path equals the reference there too.
    """
    u, i, r = ratings
    order = np.flatnonzero(u < 10)[:BATCH]
    out = {}
    for engine in ("reference", "fast"):
        core, params = _model("mf")
        before = copy.deepcopy(params)
        run_epoch(
            core,
            params,
            SGD(0.05),
            u,
            i,
            r,
            batch_size=BATCH,
            loss_fn=get_loss("mse"),
            l2=ROWS,
            order=order,
            engine=engine,
        )
        out[engine] = params
    for key in ("P", "bu"):
        np.testing.assert_array_equal(out["fast"][key][10:], before[key][10:])
        assert np.all(out["fast"][key][:10] != before[key][:10])
    _assert_params_close(out["fast"], out["reference"], 1e-6)


@pytest.mark.parametrize("name", ["mf", "deep-relu", "deep-linear"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamax"])
def test_fast_step_loss_is_data_loss_plus_penalty_value(ratings, name, optimizer):
    """One step's logged loss is the data loss plus ``L2Penalty.value``.

    Both at the pre-step weights, computed here straight from the model's
    forward pass, so the fast path's running penalty sums are checked
    against the penalty's own definition, not only against the reference.
    """
    u, i, r = ratings
    order = np.arange(BATCH)
    core, params = _model(name)
    r_hat, _ = core.forward(params, u[:BATCH], i[:BATCH])  # (batch,)
    data_loss, _ = get_loss("mse")(r_hat, r[:BATCH])
    expected = data_loss + ROWS_DENSE.value(params, u[:BATCH], i[:BATCH])
    loss = run_epoch(
        core,
        params,
        make_optimizer(optimizer),
        u,
        i,
        r,
        batch_size=BATCH,
        loss_fn=get_loss("mse"),
        l2=ROWS_DENSE,
        order=order,
        engine="fast",
    )
    assert loss == pytest.approx(expected, rel=1e-6)


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


def test_mf_sgd_engine_for_the_tutorial_penalty_only():
    """MF under SGD: the per-sample engine for whole-table or no L2 only."""
    core, params = _model("mf")
    for penalty in (0.01, 0.0, L2Penalty(0.01, l2_bias=0.01)):
        engine = fast.select_engine(core, params, SGD(), BATCH, penalty)
        assert isinstance(engine, engines.MFSGDEngine)
    for penalty in (ROWS, ROWS_NO_BIAS):
        engine = fast.select_engine(core, params, SGD(), BATCH, penalty)
        assert type(engine) is engines.SGDEngine


def test_table_penalty_log_shares_second_order_term_by_q():
    """Hand-worked: with ``q`` proportional to the true ``g`` the log is exact.

    Two steps from ``S = 10``: (n 2, s 1, cross 0.5, g 0.1) then (n 3,
    s 0.9, cross -0.2, g 0.3), logged with ``q = 1`` and ``q = 3``. Exact
    penalties: step 1 ``l2 * 1 * 10``, step 2 ``l2 * 0.81 * (10 + 1 + 0.1)``,
    so the n-weighted total is ``l2 * (20 + 3 * 0.81 * 11.1) = l2 * 46.973``.
    The log sees ``S = 11`` before step 2 (first order only) and, at the
    close, the exact ``S = 11.0``: ``g_total = 11.0 - 10.6 = 0.4``, owed
    ``l2 * 0.4 * (3 * 0.81 * 1) / 4 = l2 * 0.243``, and
    ``20 + 26.73 + 0.243 = 46.973``.
    """
    l2 = 0.01
    log = engines._TablePenaltyLog(l2, 10.0)
    total = 2 * log.value(1.0)
    log.advance(2, 1.0, 0.5, 1.0)
    assert log.value(0.9) == pytest.approx(l2 * 0.81 * 11.0)
    total += 3 * log.value(0.9)
    log.advance(3, 0.9, -0.2, 3.0)
    total += log.close(10.0 + 2 * 0.5 + 0.1 + 2 * -0.2 + 0.3)
    assert total == pytest.approx(l2 * 46.973, rel=1e-12)
    # the next segment starts from the exact sum, with nothing owed
    assert log.sum_sq == pytest.approx(11.0)
    assert log.close(11.0) == 0.0


# rate -> rtol of the logged epoch loss against the reference path
SHARED_TERM_RTOL = {0.05: 1e-6, 0.5: 1e-4, 2.0: 3e-3}


@pytest.mark.parametrize("lr", sorted(SHARED_TERM_RTOL))
@pytest.mark.parametrize("resync", [8192, 3])
def test_mf_sgd_logged_loss_with_shared_second_order_term(
    ratings, lr, resync, monkeypatch
):
    """Parameters match the reference at any rate; the logged loss nearly.

    MFSGDEngine shares the second-order part ``sum(G ** 2)`` of each
    segment's change of ``sum(W~ ** 2)`` among the segment's steps in
    proportion to ``sum(w ** 2)``: exact in total, approximate per step.
    This data is the worst case for that sharing (30 users and 40 items in
    batches of 64, so every row repeats in every batch and the cross terms
    of repeated rows dominate ``sum(G ** 2)``), and the error grows with the
    rate squared: measured 3e-7 at 0.05, 6e-5 at 0.5 and 1.4e-3 at 2.0. On
    the tutorial's first epoch it is 1.2e-7 (the test below). Parameters
    never depend on it.
    """
    u, i, r = ratings
    monkeypatch.setattr(engines, "RESYNC_STEPS", resync)
    out = {}
    for engine in ("reference", "fast"):
        core, params = _model("mf")
        opt = SGD(lr)
        losses = [
            run_epoch(
                core,
                params,
                opt,
                u,
                i,
                r,
                batch_size=BATCH,
                loss_fn=get_loss("mse"),
                l2=0.01,
                order=np.random.default_rng(epoch).permutation(len(r)),
                engine=engine,
            )
            for epoch in range(2)
        ]
        out[engine] = (losses, params)
    np.testing.assert_allclose(
        out["fast"][0], out["reference"][0], rtol=SHARED_TERM_RTOL[lr]
    )
    _assert_params_close(out["fast"][1], out["reference"][1], 1e-5)


def test_mf_sgd_logged_loss_on_the_ml100k_tutorial_epoch(data_dir):
    """On the tutorial's first epoch the shared term is 1.2e-7 of the loss.

    MFSGDEngine against SGDEngine with MFKernel, whose running sum of the
    penalty is exact per step: same tables, same order, k 200, batch 256,
    rate 0.01, whole-table l2 0.01. Measured 1.15e-7; the weights agree.
    """
    from npmf.data import load_dataset, tutorial_split

    df = load_dataset("ml-100k", data_dir)
    train, _ = tutorial_split(df)
    users, items = np.unique(df["user"]), np.unique(df["item"])
    u = np.searchsorted(users, train["user"].to_numpy()).astype(np.int32)
    i = np.searchsorted(items, train["item"].to_numpy()).astype(np.int32)
    r = (train["rating"] - train["rating"].mean()).to_numpy(np.float32)
    order = np.random.default_rng(0).permutation(len(r))
    out = {}
    for name in ("exact", "shared"):
        params = mf.init_params(len(users), len(items), 200, np.random.default_rng(0))
        penalty = L2Penalty(0.01)
        if name == "exact":
            engine = engines.SGDEngine(fast.MFKernel(params, 256, None), penalty)
        else:
            engine = engines.MFSGDEngine(256, penalty, 200)
        loss = engine.run_epoch(
            params,
            SGD(0.01),
            u,
            i,
            r,
            order=order,
            batch_size=256,
            loss_fn=get_loss("rmse"),
            on_batch=lambda *args: None,
        )
        out[name] = (loss, params)
    rel = abs(out["shared"][0] - out["exact"][0]) / out["exact"][0]
    assert 0 < rel < 3e-7
    _assert_params_close(out["shared"][1], out["exact"][1], 1e-6)


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


def test_fast_path_is_selected_for_rows_and_dense_penalties(ratings, monkeypatch):
    """engine="auto" trains the presets' penalties on the fast path.

    Rows (with and without ``l2_bias``), dense and split whole-table
    penalties get an engine for every model under SGD and Adamax, and
    ``run_epoch(engine="auto")`` never calls the reference ``train_step``
    for them. SGD with a split whole-table penalty has none (one lazy scale
    serves all four tables): "auto" falls back and "fast" raises.
    """
    from npmf import train

    def no_reference_step(*args, **kwargs):
        raise AssertionError("the reference train_step ran")

    u, i, r = ratings
    for name in ("mf", "deep-linear", "deep-relu"):
        for optimizer in ("sgd", "adamax"):
            for penalty in (ROWS, ROWS_NO_BIAS, ROWS_DENSE, TABLE_DENSE):
                core, params = _model(name)
                opt = make_optimizer(optimizer)
                engine = fast.select_engine(core, params, opt, BATCH, penalty)
                assert engine is not None, (name, optimizer, _penalty_id(penalty))
        core, params = _model(name)
        opt = make_optimizer("adamax")
        assert fast.select_engine(core, params, opt, BATCH, TABLE_SPLIT_DENSE)
        assert fast.select_engine(core, params, SGD(), BATCH, TABLE_SPLIT_DENSE) is None

    # auto takes the fast path: the reference step would raise
    monkeypatch.setattr(train, "train_step", no_reference_step)
    for name, optimizer, penalty in [
        ("mf", "sgd", ROWS),
        ("deep-relu", "adamax", ROWS_DENSE),
    ]:
        _train(name, optimizer, "auto", ratings, loss="mse", n_epochs=1, l2=penalty)

    # SGD with a split whole-table penalty: auto falls back, fast refuses
    core, params = _model("mf")
    kwargs = dict(batch_size=BATCH, loss_fn=get_loss("mse"), l2=TABLE_SPLIT_DENSE)
    with pytest.raises(AssertionError, match="reference train_step ran"):
        run_epoch(core, params, SGD(), u, i, r, engine="auto", **kwargs)
    with pytest.raises(ValueError, match="no exact fast path.*l2_bias=0.01"):
        run_epoch(core, params, SGD(), u, i, r, engine="fast", **kwargs)


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


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_deep_kernel_buffers_carry_nothing_between_steps(ratings, activation):
    """A step on kept buffers returns what a fresh kernel returns, bit for bit.

    The batches run 64, 40, then 64 samples again on one kernel, so the
    40-sample step and the one after it run on buffers a larger batch
    filled. Every kernel starts with NaN in its buffers, so a step that read
    an element it had not written would give NaN, which equals nothing.
    """
    u, i, r = ratings
    params = mlp.init_params(N_USERS, N_ITEMS, K, (16, 8), np.random.default_rng(2))
    order = np.random.default_rng(0).permutation(N_RATINGS)[: 64 + 40 + 64]
    # 104 samples in batches of 64 give 64 and 40; the last 64 come after
    batches = list(batching.epoch_batches(u, i, r, order[:104], 64, N_USERS, N_ITEMS))
    batches += list(batching.epoch_batches(u, i, r, order[104:], 64, N_USERS, N_ITEMS))
    assert [len(b.u) for b in batches] == [64, 40, 64]
    loss_fn = get_loss("rmse")

    def poisoned():
        # every float buffer NaN: an element read before the step writes it
        # turns the step's outputs NaN
        kernel = fast.kernels.DeepBatchedKernel(params, 64, activation)
        for value in vars(kernel).values():
            for a in value.values() if isinstance(value, dict) else [value]:
                if isinstance(a, np.ndarray) and a.dtype == np.float32:
                    if a is not kernel.ones:
                        a.fill(np.nan)
        kept_fields = [v for v in vars(kernel).values() if isinstance(v, list)]
        for a in (a for lst in kept_fields for a in lst if a is not None):
            a.fill(np.nan if a.dtype == np.float32 else True)
        return kernel

    kept = poisoned()
    for batch in batches:
        fresh = poisoned()
        want = fresh.step(params, 0.9, batch, loss_fn, -0.5)
        got = kept.step(params, 0.9, batch, loss_fn, -0.5)
        assert np.isfinite(want[0]) and got[0] == want[0] and got[2] == want[2]
        for key, (rows, G) in want[1].items():
            assert np.isfinite(G).all(), key
            np.testing.assert_array_equal(got[1][key][0], rows, err_msg=key)
            np.testing.assert_array_equal(got[1][key][1], G, err_msg=key)
        for (key, _, a, _), (_, _, a_got, _) in zip(want[3], got[3]):
            assert np.isfinite(a).all(), key
            np.testing.assert_array_equal(a_got, a, err_msg=key)


def test_fast_kernel_buffers_are_sized_by_the_epoch(ratings):
    """A batch size beyond the data trains one batch, as the reference does.

    The deep kernel keeps buffers for its largest batch: sized by
    ``batch_size`` itself, 10**9 rows of 16 float32 would ask for 64 GB.
    """
    u, i, r = ratings
    results = []
    for engine in ("reference", "fast"):
        core, params = _model("deep-relu")
        loss = run_epoch(
            core,
            params,
            make_optimizer("sgd", 0.05),
            u,
            i,
            r,
            batch_size=10**9,
            loss_fn=get_loss("rmse"),
            l2=0.01,
            engine=engine,
        )
        results.append((loss, params))
    (ref_loss, ref_params), (loss, params) = results
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    _assert_params_close(params, ref_params, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 3, 4, 64, 10**6])
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


@pytest.mark.parametrize("n_rows", [5, 2**23, 2**30])
def test_compact_layout_for_small_and_huge_tables(n_rows):
    """Sort keys switch from int32 to int64 when ids outgrow 31 bits.

    At batch 64 the position takes 6 bits: 2**23 rows still fit an int32
    key, 2**30 do not. Either way each batch's distinct rows and compact ids
    rebuild its ids.
    """
    rng = np.random.default_rng(3)
    idx = rng.integers(0, min(n_rows, 7), 200).astype(np.int32)  # (n,)
    idx[::9] = n_rows - 1  # the largest id occurs
    rows, bounds, compact = batching._compact(idx, n_rows, 64)
    for b in range(len(bounds) - 1):
        ids = idx[64 * b : 64 * (b + 1)]
        distinct = rows[bounds[b] : bounds[b + 1]]
        np.testing.assert_array_equal(distinct, np.unique(ids))
        np.testing.assert_array_equal(distinct[compact[64 * b : 64 * (b + 1)]], ids)


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


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_predict_deep_equals_forward(ratings, activation, monkeypatch):
    """First-layer id tables give the forward pass's predictions.

    With CACHE_ELEMENTS at 40 and h1 = 16 each pass holds 2 rows, so the
    pass loop runs 500 times; MF, linear models (which have their own
    contracted ``predict``) and calls with fewer ratings than users plus
    items take the plain route (None).
    """
    from npmf.fast import predict

    u, i, r = ratings
    core, params = _model(f"deep-{activation}")
    monkeypatch.setattr(predict, "CACHE_ELEMENTS", 40)
    ours = predict.predict_deep(core, params, u, i, batch_size=BATCH)  # (n,)
    expected, _ = core.forward(params, u, i)  # (n,)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)

    # fewer ratings than users plus items, or a linear model: no fast route
    assert predict.predict_deep(core, params, u[:50], i[:50], BATCH) is None
    linear, params = _model("deep-linear")
    assert predict.predict_deep(linear, params, u, i, BATCH) is None
    assert predict.predict_deep(mf, _model("mf")[1], u, i, BATCH) is None


BIAS_STEP_CASES = [
    ("mf", "sgd", "mse", ROWS),
    ("mf", "adamax", "rmse", ROWS),
    ("mf", "adamax", "rmse", 0.01),
    ("deep-relu", "sgd", "mse", ROWS_DENSE),
    ("deep-relu", "adamax", "mse", ROWS_DENSE),
    ("deep-linear", "sgd", "mse", ROWS),
]


@pytest.mark.parametrize(
    ("name", "optimizer", "loss", "penalty"),
    BIAS_STEP_CASES,
    ids=[f"{n}-{o}-{lo}-{_penalty_id(p)}" for n, o, lo, p in BIAS_STEP_CASES],
)
def test_fast_equals_reference_with_bias_step(ratings, name, optimizer, loss, penalty):
    """bias_lr_scale: the bias tables' own step size agrees on both paths.

    The scaled run must also differ from the unscaled one in the biases, so
    the comparison is not between two runs that ignore the option.
    """
    params, _, _ = _assert_fast_equals_reference(
        name, optimizer, ratings, loss=loss, l2=penalty, bias_lr_scale=0.3
    )
    plain, _, _ = _train(name, optimizer, "fast", ratings, loss=loss, l2=penalty)
    assert np.abs(plain["bu"] - params["bu"]).max() > 1e-3


def test_sgd_table_penalty_with_bias_step_trains_on_reference(ratings):
    """SGD, whole-table L2 and bias_lr_scale != 1 has no lazy-scale form.

    ``auto`` falls back to the reference path (same result as asking for
    it); ``fast`` says why it cannot.
    """
    auto, _, _ = _train("mf", "sgd", "auto", ratings, bias_lr_scale=0.3)
    ref, _, _ = _train("mf", "sgd", "reference", ratings, bias_lr_scale=0.3)
    for key in ref:
        np.testing.assert_array_equal(auto[key], ref[key])
    with pytest.raises(ValueError, match="no exact fast path"):
        _train("mf", "sgd", "fast", ratings, bias_lr_scale=0.3)
