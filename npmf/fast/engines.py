"""Epoch loops of the fast path: lazy-scale SGD and in-place dense Adamax.

Both loops take their batches from :func:`npmf.fast.batching.epoch_batches`,
run a kernel of :mod:`npmf.fast.kernels` and apply its gradients the way the
reference optimizer (:mod:`npmf.optim`) would, step for step.
"""

import contextlib

import numpy as np

from npmf.fast.batching import epoch_batches, epoch_slices, scatter_rows
from npmf.fast.kernels import RankOneRows, _row_dots, fast_loss
from npmf.models import EMBEDDING_KEYS
from npmf.optim import BIAS_KEYS, key_learning_rate

F32 = np.float32

RESCALE_BELOW = 2.0**-10
"""Fold the lazy scale into the tables once it falls below this."""

RESYNC_STEPS = 8192
"""Recompute ``sum(W ** 2)`` exactly this often (bounds float drift)."""

ADAMAX_CHUNK = 32768
"""Elements per in-cache block of the dense Adamax update."""


_CONTROLLER = None


def blas_limit(threads):
    """Context manager capping BLAS threads (no-op when ``threads`` is None).

    Parameters
    ----------
    threads : int or None
        Thread cap for the BLAS library NumPy uses.

    Returns
    -------
    context manager
        From :class:`threadpoolctl.ThreadpoolController`.

    Notes
    -----
    NOTE: kernels made of vector-sized BLAS calls (dot products,
    matrix-vector products) set ``blas_threads = 1``. Those calls are
    memory-bound and too short to gain from a second thread, and when the
    cores are busy OpenBLAS threads waiting on each other made a deep-linear
    epoch about 100 times slower (0.2 s against 16 to 24 s, measured on a
    loaded 2-core machine). GEMM-bound kernels leave the caller's setting
    alone: there a second thread pays off on an idle machine (on the loaded
    one, one thread was still 3 times faster; see ``benchmarks/``).
    """
    global _CONTROLLER
    if threads is None:
        return contextlib.nullcontext()
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=threads, user_api="blas")


def _sum_sq(params):
    """``sum(W ** 2)`` over the embedding tables, in float64."""
    return sum(float(np.dot(W.ravel(), W.ravel())) for W in _tables(params))


def _tables(params):
    return [params[key] for key in EMBEDDING_KEYS]


def _add_rows(table, rows, G, ones, arange, norm=True):
    """``table[rows] += G`` for distinct ``rows``; returns ``sum(G ** 2)``.

    With ``norm=False`` the sum is skipped (the kernel reported it) and 0.0
    returned.
    """
    n = len(rows)
    if isinstance(G, RankOneRows):
        # G = outer(coef, vec): every row reads the one source row vec
        scatter_rows(table, rows, G.coef, G.vec[None, :], 0 * arange[:n])
        if not norm:
            return 0.0
        return float(np.dot(G.coef, G.coef)) * float(np.dot(G.vec, G.vec))
    if table.ndim == 1:
        np.add.at(table, rows, G)
    else:
        scatter_rows(table, rows, ones[:n], G, arange[:n])
    if not norm:
        return 0.0
    flat = G.reshape(-1)
    return float(np.dot(flat, flat))


def _dense_sum_sq(params):
    """``sum(W ** 2)`` over the dense kernels ``W1, W2, ...``, in float64."""
    return sum(
        float(np.dot(W.ravel(), W.ravel()))
        for key, W in params.items()
        if key.startswith("W")
    )


def _sgd_dense(kernel, params, key, kind, a, b, lr, l2_dense):
    """``W -= lr (dW + 2 l2_dense W)`` in place for one dense gradient.

    The penalty term applies to the kernels ``W1, W2, ...`` only, and only
    when ``l2_dense`` is not 0; then a rank-one ``dW`` is applied at once
    (``W`` changes densely anyway) instead of being deferred.
    """
    W = params[key]
    if l2_dense and key.startswith("W"):
        # dW + 2 l2_dense W, summed in the reference's order
        g = F32(2.0 * l2_dense) * W  # (in, out)
        if kind == "outer":
            g += np.outer(a, b)
        elif kind == "column":
            g[:, 0] += a
        else:
            g += a
        W -= F32(lr) * g
    elif kind == "outer":
        # rank-1 update W += (-lr) outer(a, b), deferred by the kernel
        kernel.defer_outer(params, key, -lr, a, b)
    elif kind == "column":
        W[:, 0] -= F32(lr) * a
    else:
        # NOTE: an "array" gradient is a fresh array of the kernel's, so it
        # takes lr * dW in place and W is read and written once
        a *= F32(lr)
        W -= a


class SGDEngine:
    """SGD with the whole-table L2 applied lazily through one scale factor.

    Parameters
    ----------
    kernel : object
        A kernel of :mod:`npmf.fast.kernels` built for ``params`` (with the
        penalty's ``rows`` weights when ``penalty.penalty == "rows"``).
    penalty : L2Penalty
        The penalty; under ``"table"`` its four table weights must be equal
        (one scale serves the four tables).

    Notes
    -----
    The reference step is ``W <- W - lr (dW_data + 2 l2 W)`` on every row of
    ``P``, ``Q``, ``bu`` and ``bi``, that is
    ``W <- (1 - 2 lr l2) W - lr dW_data``. Store ``W = s W~`` with one float64
    ``s`` for the four tables; then the step is exactly::

        s'  = (1 - 2 lr l2) s
        W~ <- W~ - (lr / s') dW_data            (only the batch's rows)

    so a step touches the rows in the batch and nothing else. The penalty the
    reference logs, ``l2 sum(W ** 2) = l2 s^2 sum(W~ ** 2)``, is kept up to
    date from ``sum(W~' ** 2) = sum(W~ ** 2) + 2 <W~, G> + sum(G ** 2)`` with
    ``G = -(lr / s') dW_data``. ``s`` is folded back into the tables (one pass)
    when it falls below :data:`RESCALE_BELOW` and at the end of the epoch, so
    ``params`` holds the true weights whenever the caller sees it. Dense
    layers take the plain update ``W -= lr dW``; a rank-one ``dW`` is handed
    to the kernel's ``defer_outer``
    (:class:`npmf.fast.kernels.DeepLinearKernel`).

    The per-rating ("rows") penalty only touches the batch's rows: its
    gradient comes with the kernel's data gradient and its value with the
    kernel's loss, and with no whole-table penalty ``s`` stays 1. A dense
    penalty ``l2_dense sum(W_l ** 2)`` is added to the kernels' gradients
    (each kernel then changes densely; see :func:`_sgd_dense`), and its value
    is recomputed from the updated kernels after every step.

    ``lr`` and ``2 l2`` are rounded to float32 first, as the reference
    multiplies float32 arrays by them.
    """

    def __init__(self, kernel, penalty):
        self.kernel = kernel
        self.penalty = penalty

    def run_epoch(self, params, optimizer, u, i, r, **kwargs):
        """Train one epoch; returns the batch-size-weighted mean step loss."""
        with blas_limit(self.kernel.blas_threads):
            return self._run_epoch(params, optimizer, u, i, r, **kwargs)

    def _run_epoch(
        self, params, optimizer, u, i, r, *, order, batch_size, loss_fn, on_batch
    ):
        pen = self.penalty
        l2 = pen.l2 if pen.penalty == "table" else 0.0
        l2_dense = pen.l2_dense
        lr = float(F32(optimizer.learning_rate))
        decay = 1.0 - lr * float(F32(2.0 * l2)) if l2 else 1.0
        # the kernel folds -lr into every table's G; bu and bi may step with
        # lr * bias_lr_scale, so their G is rescaled by lr_bias / lr
        lr_bias = float(F32(key_learning_rate(optimizer, "bu")))
        bias_factor = F32(lr_bias / lr) if lr_bias != lr else None
        if bias_factor is not None and l2:
            raise ValueError(
                "the fast SGD path shares one lazy scale between the tables "
                "and cannot step the bias tables at another rate under a "
                "whole-table penalty; use engine='reference'"
            )
        n_users, n_items = len(params["bu"]), len(params["bi"])
        arange = np.arange(max(n_users, n_items, 1), dtype=np.int32)
        ones = np.ones(len(arange), dtype=F32)
        # NOTE: the running sum(W~ ** 2) only serves a whole-table penalty
        track = l2 != 0
        self.s, total = 1.0, 0.0
        sum_sq = _sum_sq(params) if track else 0.0
        dense_sq = _dense_sum_sq(params) if l2_dense else 0.0
        loss_fn = fast_loss(loss_fn)
        try:
            batches = epoch_batches(u, i, r, order, batch_size, n_users, n_items)
            for b, batch in enumerate(batches, start=1):
                # data loss and gradient at the pre-step weights
                s_new = self.s * decay
                loss, emb, cross, dense, g2, rows_pen = self.kernel.step(
                    params, self.s, batch, loss_fn, -lr / s_new
                )
                step_loss = loss + rows_pen + l2_dense * dense_sq
                step_loss += l2 * self.s * self.s * sum_sq
                on_batch(b, step_loss, len(batch[0]))
                total += step_loss * len(batch[0])

                # stored rows move by G; sum(W~^2) follows
                norm = track and g2 is None
                if track:
                    sum_sq += 2.0 * cross + (g2 or 0.0)
                for key, (rows, G) in emb.items():
                    if bias_factor is not None and key in BIAS_KEYS:
                        G = G * bias_factor  # (n_rows,)
                    sum_sq += _add_rows(params[key], rows, G, ones, arange, norm)
                for key, kind, a, vec in dense:
                    _sgd_dense(self.kernel, params, key, kind, a, vec, lr, l2_dense)
                if l2_dense:
                    dense_sq = _dense_sum_sq(params)
                self.s = s_new
                optimizer.iterations += 1

                # fold the scale back in, or refresh the running sum
                if track and (self.s < RESCALE_BELOW or b % RESYNC_STEPS == 0):
                    self._fold(params)
                    sum_sq = _sum_sq(params)
        finally:
            self._fold(params)
            if hasattr(self.kernel, "flush"):
                self.kernel.flush(params)
        return total / (len(r) if order is None else len(order))

    def _fold(self, params):
        """Multiply the tables by ``s`` and reset it to 1."""
        _fold_tables(params, self.s)
        self.s = 1.0


def _fold_tables(params, s):
    """Multiply the four embedding tables by the scale ``s`` in place."""
    if s != 1.0:
        for W in _tables(params):
            W *= F32(s)


class _TablePenaltyLog:
    """The whole-table penalty of each step's logged loss, for MFSGDEngine.

    Parameters
    ----------
    l2 : float
        Penalty weight.
    sum_sq : float
        ``sum(W~ ** 2)`` over the stored tables at the segment's start.

    Notes
    -----
    Step ``b`` logs ``l2 s_b^2 S_b`` with ``S_b = sum(W~ ** 2)`` before the
    step. A step moves ``S`` by ``2 c_b + g_b``: ``c_b = <W~[rows], G>`` comes
    from the forward pass at no cost, ``g_b = sum(G ** 2)`` over the distinct
    rows would need them. The log follows ``S`` with ``c_b`` only; at the end
    of a segment of steps the exact ``S`` (from the tables) gives the
    segment's ``sum_b g_b``, which is shared among its steps in proportion to
    ``q_b``, and the loss total gets what the later steps' penalties owe
    to it: ``l2 sum_b g_b sum_(b' > b) n_b' s_b'^2``.
    """

    def __init__(self, l2, sum_sq):
        self.l2 = l2
        self.sum_sq = sum_sq
        self.q_run = 0.0
        self.owed = 0.0

    def value(self, s):
        """Penalty at the pre-step weights, first-order part."""
        return self.l2 * s * s * self.sum_sq

    def advance(self, n_b, s, cross, q):
        """Account for a step of ``n_b`` samples at scale ``s``."""
        # the g of every earlier step of the segment weighs on this step
        self.owed += n_b * s * s * self.q_run
        self.sum_sq += 2.0 * cross
        self.q_run += q

    def close(self, sum_sq):
        """End the segment at the exact ``sum(W~ ** 2)``.

        Returns the penalties' share of the second-order terms, weighted by
        batch size like the loss total.
        """
        g_total = sum_sq - self.sum_sq
        owed = self.l2 * g_total * self.owed / self.q_run if self.q_run else 0.0
        self.sum_sq, self.q_run, self.owed = sum_sq, 0.0, 0.0
        return owed


class MFSGDEngine:
    """SGD on the MF model, each sample's gradient added straight to its rows.

    Parameters
    ----------
    batch_size : int
        Largest batch; sizes the gathered-rows buffer.
    penalty : L2Penalty
        Whole-table penalty with one weight for the four tables, or none.
    k : int
        Number of factors.

    Notes
    -----
    The tutorial's step. Parameters move exactly as in :class:`SGDEngine`
    (the lazy scale ``W = s W~``, see there), but a step needs no
    distinct-row layout: with ``X = [P~[u]; Q~[i]]`` gathered once, every
    sample's data gradient is added to its own rows by scatter calls that
    read ``X`` (the pre-step rows), and repeated ids accumulate::

        P~[u_b]  += w_b Q~[i_b],    Q~[i_b]  += w_b P~[u_b]
        bu~[u_b] += wb_b,           bi~[i_b] += wb_b
        w_b = -(lr / s') s dr_hat_b,   wb_b = -(lr / s') dr_hat_b

    About 15 NumPy calls a step, against some 35 for :class:`SGDEngine`
    with :class:`npmf.fast.kernels.MFKernel`.

    The logged loss needs ``sum(W~ ** 2)`` before every step; its
    second-order change ``sum(G ** 2)`` would need the per-row sums this
    engine never forms, so it is shared among the steps of a segment (the
    epoch, or up to a fold of the scale or :data:`RESYNC_STEPS` steps) in
    proportion to ``q_b = sum(wb ** 2)`` (:class:`_TablePenaltyLog`).

    NOTE: the parameters are exact; only the logged loss depends on that
    sharing, through a second-order term whose segment total is exact. On
    the tutorial's first epoch it moves the loss by 1.2e-7 of its value
    against the exact running sum of :class:`SGDEngine`; the error grows
    with the step size squared and with rows repeated in a batch
    (``tests/test_fast.py``). The
    exact per-step sum costs a second gather of the rows, a third of the step.
    The step loss handed to ``on_batch`` (progress, divergence check) has the
    first-order sum only.
    """

    blas_threads = 1

    def __init__(self, batch_size, penalty, k):
        self.penalty = penalty
        self.X = np.zeros((2 * batch_size, k), dtype=F32)  # (2 batch, k)
        self.arange = np.arange(2 * batch_size, dtype=np.int32)  # (2 batch,)
        self.zeros = np.zeros(batch_size, dtype=np.int32)  # (batch,)
        self.one = np.ones((1, 1), dtype=F32)  # (1, 1)
        self.s = 1.0

    def run_epoch(self, params, optimizer, u, i, r, **kwargs):
        """Train one epoch; returns the batch-size-weighted mean step loss."""
        with blas_limit(self.blas_threads):
            return self._run_epoch(params, optimizer, u, i, r, **kwargs)

    def _run_epoch(
        self, params, optimizer, u, i, r, *, order, batch_size, loss_fn, on_batch
    ):
        l2 = self.penalty.l2
        lr = float(F32(optimizer.learning_rate))
        bias_factor = float(F32(key_learning_rate(optimizer, "bu"))) / lr
        if bias_factor != 1.0 and l2:
            raise ValueError(
                "MFSGDEngine shares one lazy scale between the tables; the "
                "bias tables cannot step at another rate under a whole-table "
                "penalty"
            )
        log = _TablePenaltyLog(l2, _sum_sq(params)) if l2 else None
        self.s, self.total = 1.0, 0.0
        batches = epoch_slices(u, i, r, order, batch_size)
        try:
            self._steps(params, optimizer, batches, fast_loss(loss_fn), on_batch, log)
            if log is not None:
                self.total += log.close(_sum_sq(params))
        finally:
            # the tables hold the true weights whenever the caller sees them
            _fold_tables(params, self.s)
            self.s = 1.0
        return self.total / (len(r) if order is None else len(order))

    def _steps(self, params, optimizer, batches, loss_fn, on_batch, log):
        """Run the epoch's steps; adds ``n_b * step loss`` to ``self.total``."""
        P, Q, bu, bi = (params[key] for key in EMBEDDING_KEYS)
        bu2, bi2 = bu.reshape(-1, 1), bi.reshape(-1, 1)  # (n_users, 1), (n_items, 1)
        lr = float(F32(optimizer.learning_rate))
        bias_lr = float(F32(key_learning_rate(optimizer, "bu")))
        decay = 1.0 - lr * float(F32(2.0 * log.l2)) if log else 1.0
        for b, (ub, ib, rb) in enumerate(batches, start=1):
            nb, s = len(rb), self.s
            s_new = s * decay

            # gather the stored rows: X = [P~[u]; Q~[i]]
            X = self.X[: 2 * nb]  # (2 batch, k)
            P.take(ub, axis=0, out=X[:nb], mode="clip")
            Q.take(ib, axis=0, out=X[nb:], mode="clip")
            b_sum = bu.take(ub)  # (batch,)
            b_sum += bi.take(ib)

            # r_hat = s^2 P~[u] . Q~[i] + s (bu~[u] + bi~[i])
            dot = _row_dots(X[:nb], X[nb:])  # (batch,)
            r_hat = dot * F32(s * s)  # (batch,)
            r_hat += b_sum * F32(s)
            loss, dr_hat = loss_fn(r_hat, rb)  # scalar, (batch,)

            # W~ += G, G = -(lr / s') dW per sample; X holds the pre-step rows
            w = dr_hat * F32(-lr * s / s_new)  # (batch,)
            wb = dr_hat * F32(-bias_lr / s_new)  # (batch,)
            scatter_rows(P, ub, w, X, self.arange[nb : 2 * nb])
            scatter_rows(Q, ib, w, X, self.arange[:nb])
            scatter_rows(bu2, ub, wb, self.one, self.zeros[:nb])
            scatter_rows(bi2, ib, wb, self.one, self.zeros[:nb])
            self.s = s_new
            optimizer.iterations += 1

            if log is None:
                on_batch(b, loss, nb)
                self.total += loss * nb
                continue
            step_loss = loss + log.value(s)
            on_batch(b, step_loss, nb)
            self.total += step_loss * nb

            # sum(W~ ** 2) moves by 2 <W~[rows], G> + sum(G ** 2)
            cross = 2.0 * float(np.dot(w, dot)) + float(np.dot(wb, b_sum))
            log.advance(nb, s, cross, float(np.dot(wb, wb)))
            if self.s < RESCALE_BELOW or b % RESYNC_STEPS == 0:
                self.total += log.close(_sum_sq(params))
                _fold_tables(params, self.s)
                self.s = 1.0
                log.sum_sq = _sum_sq(params)


class AdamaxEngine:
    """Keras's Adamax, dense on every row as the reference's Adamax is.

    Parameters
    ----------
    kernel : object
        A kernel of :mod:`npmf.fast.kernels` built for ``params`` (with the
        penalty's ``rows`` weights when ``penalty.penalty == "rows"``).
    penalty : L2Penalty
        The penalty: whole-table (any weight per table) or rows, plus any
        ``l2_dense``.

    Notes
    -----
    The whole-table penalty gives every row a gradient, and ``max`` and the
    division make the update of a row outside the batch depend on its own
    history, so no lazy form is exact: every element of ``W``, ``m`` and ``v``
    is updated each step, as in :class:`npmf.optim.Adamax`. (The same holds
    under the rows penalty: a row outside the batch has a zero gradient but
    its ``m`` and ``v`` still decay and it still moves.) The fast path
    differs in cost only: the gradient buffer is filled in place
    (``2 c W``, then the batch's rows added; ``2 l2_dense W`` added to the
    dense kernels; a table without a whole-table weight keeps a zero buffer
    whose batch rows are cleared after the step), and the update runs block
    by block (:data:`ADAMAX_CHUNK` elements) with in-place ufuncs into two
    block-sized temporaries, so each block stays in cache across its eleven
    operations and no full-size temporary is allocated. The per-element
    arithmetic is the reference's, operation for operation. The whole-array
    penalties' ``sum(W ** 2)`` are taken in the same pass, from the updated
    blocks.
    """

    def __init__(self, kernel, penalty):
        self.kernel = kernel
        self.penalty = penalty

    def run_epoch(self, params, optimizer, u, i, r, **kwargs):
        """Train one epoch; returns the batch-size-weighted mean step loss."""
        with blas_limit(self.kernel.blas_threads):
            return self._run_epoch(params, optimizer, u, i, r, **kwargs)

    def _whole_array_weights(self, params):
        """Weight ``c`` of each parameter under a whole-array penalty."""
        pen, weights = self.penalty, {}
        if pen.penalty == "table":
            weights.update({key: c for key, c in pen.weights.items() if c})
        if pen.l2_dense:
            weights.update({key: pen.l2_dense for key in params if key[0] == "W"})
        return weights

    def _run_epoch(
        self, params, optimizer, u, i, r, *, order, batch_size, loss_fn, on_batch
    ):
        n_users, n_items = len(params["bu"]), len(params["bi"])
        arange = np.arange(max(n_users, n_items, 1), dtype=np.int32)
        ones = np.ones(len(arange), dtype=F32)
        # NOTE: the update reads g without writing it, so a table without a
        # whole-table penalty keeps a zero buffer and only the batch's rows
        # are cleared after each step, not the whole table
        grads = {key: np.zeros_like(W) for key, W in params.items()}
        for key, W in params.items():
            optimizer.m.setdefault(key, np.zeros_like(W))
            optimizer.v.setdefault(key, np.zeros_like(W))
        scratch = np.empty((2, ADAMAX_CHUNK), dtype=F32)
        weights = self._whole_array_weights(params)
        two_c = {key: F32(2.0 * c) for key, c in weights.items()}
        sum_sq = {
            key: float(np.dot(params[key].ravel(), params[key].ravel()))
            for key in weights
        }
        total = 0.0
        loss_fn = fast_loss(loss_fn)
        batches = epoch_batches(u, i, r, order, batch_size, n_users, n_items)
        for b, batch in enumerate(batches, start=1):
            # data loss and gradient at the pre-step weights
            loss, emb, _, dense, _, rows_pen = self.kernel.step(
                params, 1.0, batch, loss_fn, 1.0
            )
            step_loss = loss + rows_pen
            step_loss += sum(c * sum_sq[key] for key, c in weights.items())
            on_batch(b, step_loss, len(batch[0]))
            total += step_loss * len(batch[0])

            # full gradients: 2 c W (or 0) plus the batch rows; dense as given
            for key, (rows, G) in emb.items():
                if key in two_c:
                    np.multiply(params[key], two_c[key], out=grads[key])
                _add_rows(grads[key], rows, G, ones, arange, norm=False)
            for key, kind, a, vec in dense:
                _fill_dense(grads, key, kind, a, vec)
                if key in two_c:
                    # d (l2_dense W^2) / dW = 2 l2_dense W
                    grads[key] += two_c[key] * params[key]  # (in, out)

            # dense in-place update of every parameter
            sum_sq = _adamax_update(params, grads, optimizer, scratch, weights)

            # zero buffers again: the batch's rows were the only non-zero ones
            for key, (rows, _) in emb.items():
                if key not in two_c:
                    grads[key][rows] = 0
        return total / (len(r) if order is None else len(order))


def _fill_dense(grads, key, kind, a, vec):
    """Write one dense gradient of the kernel into its buffer."""
    if kind == "outer":
        np.outer(a, vec, out=grads[key])
    elif kind == "column":
        grads[key][:, 0] = a
    else:
        # NOTE: an "array" gradient is a fresh array of the kernel's, so it
        # becomes the buffer itself, without a copy
        grads[key] = a


def _adamax_update(params, grads, optimizer, scratch, keys):
    """One Adamax step on every parameter; returns ``sum(W**2)`` of ``keys``.

    Notes
    -----
    Per element, exactly :meth:`npmf.optim.Adamax.step`::

        m <- m + (1 - beta_1) (g - m)
        v <- max(beta_2 v, |g|)
        W <- W - (lr_t m) / (v + epsilon),  lr_t = lr / (1 - beta_1 ** t)

    ``g`` is only read; ``scratch`` holds two blocks of temporaries.
    """
    opt = optimizer
    t = opt.iterations + 1
    b1c, b2, eps = F32(1.0 - opt.beta_1), F32(opt.beta_2), F32(opt.epsilon)
    correction = F32(1.0) - F32(opt.beta_1) ** F32(t)
    sum_sq = dict.fromkeys(keys, 0.0)
    for key, W in params.items():
        lr_t = F32(key_learning_rate(opt, key)) / correction
        flat = [a.reshape(-1) for a in (W, grads[key], opt.m[key], opt.v[key])]
        for start in range(0, flat[0].size, ADAMAX_CHUNK):
            Wc, gc, mc, vc = (a[start : start + ADAMAX_CHUNK] for a in flat)
            tc, tc2 = scratch[0, : Wc.size], scratch[1, : Wc.size]

            # m <- m + (1 - beta_1) (g - m)
            np.subtract(gc, mc, out=tc)
            tc *= b1c
            mc += tc

            # v <- max(beta_2 v, |g|)
            np.abs(gc, out=tc)
            vc *= b2
            np.maximum(vc, tc, out=vc)

            # W <- W - (lr_t m) / (v + eps)
            np.add(vc, eps, out=tc)
            np.multiply(mc, lr_t, out=tc2)
            np.divide(tc2, tc, out=tc2)
            Wc -= tc2
            if key in sum_sq:
                sum_sq[key] += float(np.dot(Wc, Wc))
    opt.iterations = t
    return sum_sq
