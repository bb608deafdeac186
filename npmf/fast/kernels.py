"""One training step's forward and backward pass, in compact form.

Each kernel reads the embedding tables in *stored* form: the true table is
``s * stored`` with one scalar ``s`` shared by ``P``, ``Q``, ``bu`` and
``bi`` (see :mod:`npmf.fast.engines`; ``s == 1`` when no scale is kept).
A step returns

- ``loss``: the batch data loss, from the same ``loss_fn`` the reference
  trainer calls;
- ``emb``: per table ``(rows, G)``, the data gradient of the distinct rows
  the batch touched, multiplied by the caller's ``gscale`` (the optimizer
  folds its step size in there, so no extra pass is needed);
- ``cross``: ``sum over tables of <stored[rows], G>``, which lets the caller
  update ``sum(stored ** 2)`` without reading the rows again;
- ``dense``: gradients of the dense layers as ``(key, kind, a, b)`` with kind
  ``"outer"`` (``dW = outer(a, b)``), ``"column"`` (``dW[:, 0] = a``) or
  ``"array"`` (``dW = a``);
- ``g2``: ``sum(G ** 2)`` over all tables when the kernel has it at hand,
  else None (the caller then takes the norm of each ``G``);
- ``pen``: the per-rating ("rows") L2 penalty of the batch at the pre-step
  weights, 0.0 without one.

A kernel built with ``rows`` (the weights of :class:`npmf.optim.L2Penalty`
with ``penalty="rows"``) adds that penalty's gradient to ``emb``: for a
table of weight ``c`` the batch's sample ``b`` contributes
``(2 c / batch) W[idx_b]``, so a distinct row ``j`` gets
``(2 c / batch) count_j W[j]``, the reference's
:meth:`npmf.optim.L2Penalty.add_grads`. The caller keeps no whole-table sum
of squares then (there is no whole-table penalty), so ``cross`` and ``g2``
are 0.0.

The math is the reference model's (:mod:`npmf.models.mf`,
:mod:`npmf.models.mlp`); only the order of float32 sums differs.
"""

from typing import NamedTuple

import numpy as np

from npmf.fast.batching import scatter_rows
from npmf.layers import ACTIVATIONS
from npmf.losses import mse_loss, rmse_loss

F32 = np.float32


def fast_loss(loss_fn):
    """Return a cheaper twin of a known loss function, or the function itself.

    Parameters
    ----------
    loss_fn : callable
        ``f(r_hat, r) -> (loss, dr_hat)``.

    Returns
    -------
    callable
        Same contract. For :func:`npmf.losses.rmse_loss` and
        :func:`npmf.losses.mse_loss`, the same formulas with the sum of
        squares taken by one ``np.dot`` instead of ``np.mean`` (about 10 us
        less per step); any other function is returned unchanged.

    Notes
    -----
    NOTE: only the float32 summation order of ``sum(e ** 2)`` differs from
    :mod:`npmf.losses`; the gradient ``e / (batch * loss)`` (rmse) or
    ``(2 / batch) e`` (mse) is the same expression.
    """
    if loss_fn is rmse_loss:
        return _rmse
    if loss_fn is mse_loss:
        return _mse
    return loss_fn


def _rmse(r_hat, r):
    # e = r_hat - r; loss = sqrt(mean(e^2)); d loss / d r_hat = e / (batch loss)
    e = r_hat - r  # (batch,)
    loss = float(np.sqrt(F32(np.dot(e, e)) / F32(len(e))))
    e /= len(e) * loss
    return loss, e


def _mse(r_hat, r):
    # e = r_hat - r; loss = mean(e^2); d loss / d r_hat = 2 e / batch
    e = r_hat - r  # (batch,)
    loss = float(F32(np.dot(e, e)) / F32(len(e)))
    e *= 2.0 / len(e)
    return loss, e


def _row_dots(A, B):
    """``sum(A * B, axis=1)`` without the ``(n, k)`` product.

    NOTE: ``np.vecdot`` (NumPy 2) is about 20 % faster here than the stack of
    ``(1, k) @ (k, 1)`` matrix products older NumPy falls back to.
    """
    if hasattr(np, "vecdot"):
        return np.vecdot(A, B)  # (n,)
    return np.matmul(A[:, None, :], B[:, :, None]).reshape(-1)  # (n,)


def _segment_sum(values, compact, n_groups):
    """Sum a per-sample vector over the samples of each distinct row."""
    return np.bincount(compact, weights=values, minlength=n_groups).astype(F32)


class MFKernel:
    """Step of the MF model ``r_hat = P[u] . Q[i] + bu[u] + bi[i]``.

    Parameters
    ----------
    params : dict of str to ndarray
        ``P (n_users, k)``, ``Q (n_items, k)``, ``bu``, ``bi``.
    batch_size : int
        Largest batch; sizes the reusable buffers.
    rows : dict of str to float or None, default=None
        Weights ``c`` of a per-rating L2 penalty by table (``P``, ``Q``,
        ``bu``, ``bi``); None for none.

    Notes
    -----
    With stored tables and ``P = s P~`` (likewise ``Q``, ``bu``, ``bi``)::

        r_hat_b   = s^2 P~[u_b] . Q~[i_b] + s (bu~[u_b] + bi~[i_b])
        dP[u]     = sum over b with u_b = u of dr_hat_b s Q~[i_b]
        dQ[i]     = sum over b with i_b = i of dr_hat_b s P~[u_b]
        dbu[u]    = sum over b with u_b = u of dr_hat_b        (dbi alike)

    and ``<P~, gscale dP> = gscale s sum_b dr_hat_b P~[u_b] . Q~[i_b]`` (the
    same for ``Q``), so ``cross`` needs only the batch's dot products.

    With a rows penalty of weights ``c`` the step also returns and
    differentiates::

        pen       = (s^2 / batch) sum_b [ c_P |P~[u_b]|^2 + c_Q |Q~[i_b]|^2
                                          + c_bu bu~[u_b]^2 + c_bi bi~[i_b]^2 ]
        dP[u]    += sum over b with u_b = u of (2 c_P / batch) s P~[u_b]
                  = (2 c_P / batch) count_u s P~[u]

    The per-sample terms ride in the same scatter as the data terms: one more
    weight per sample, reading ``X`` itself (``dbu`` alike, in the bias
    ``bincount``).

    NOTE: both tables' rows go through one stacked buffer
    ``X = [P~[u]; Q~[i]]`` and one stacked gradient ``[dP[uq]; dQ[iq]]``, so
    each step makes one scatter call and one norm for the two tables: at
    about 150 us a step, call overhead is a third of the cost. (Scattering
    per sample straight into the tables and correcting the norm for repeated
    rows was tried and measured 20 % slower.)
    """

    blas_threads = 1

    def __init__(self, params, batch_size, rows=None):
        k = params["P"].shape[1]
        self.rows = rows
        self.X = np.empty((2 * batch_size, k), dtype=F32)  # (2 batch, k)
        self.G = np.empty((2 * batch_size, k), dtype=F32)  # (2 batch, k)
        self.w = np.empty(2 * batch_size, dtype=F32)  # (2 batch,)
        self.wb = np.empty(2 * batch_size, dtype=F32)  # (2 batch,)
        self.wp = np.empty(2 * batch_size, dtype=F32)  # (2 batch,)
        self.arange = np.arange(2 * batch_size, dtype=np.int32)  # (2 batch,)
        self.src = {}

    def _source_rows(self, n):
        """Row of ``X`` each stacked term reads: ``Q~[i]`` for P, ``P~[u]`` for Q."""
        if n not in self.src:
            self.src[n] = np.concatenate([np.arange(n, 2 * n), np.arange(n)]).astype(
                np.int32
            )  # (2 batch,)
        return self.src[n]

    def step(self, params, s, batch, loss_fn, gscale):
        """Run one step; see the module docstring for the outputs."""
        ub, ib, rb, cu, uq, ci, iq, joint = batch
        P, Q, bu, bi = params["P"], params["Q"], params["bu"], params["bi"]
        nb, n_uq = len(ub), len(uq)

        # look up stored rows into X = [P~[u]; Q~[i]]
        X = self.X[: 2 * nb]  # (2 batch, k)
        P.take(ub, axis=0, out=X[:nb], mode="clip")
        Q.take(ib, axis=0, out=X[nb:], mode="clip")
        pu, qi = X[:nb], X[nb:]  # (batch, k), (batch, k)

        # predict with the scale folded in; one dot product per sample
        bu_u, bi_i = bu[ub], bi[ib]  # (batch,), (batch,)
        b_sum = bu_u + bi_i  # (batch,)
        dot = _row_dots(pu, qi)  # (batch,)
        r_hat = dot * F32(s * s)  # (batch,)
        r_hat += b_sum * F32(s)
        loss, dr_hat = loss_fn(r_hat, rb)  # scalar, (batch,)

        # d r_hat / d P[u] = s Q~[i], d r_hat / d Q[i] = s P~[u]: one scatter
        w = self.w[: 2 * nb]  # (2 batch,)
        np.multiply(dr_hat, F32(gscale * s), out=w[:nb])
        w[nb:] = w[:nb]
        G = self.G[: n_uq + len(iq)]  # (n_uq + n_iq, k)
        G.fill(0)
        scatter_rows(G, joint, w, X, self._source_rows(nb))

        # d r_hat / d bu[u] = d r_hat / d bi[i] = 1
        wb = self.wb[: 2 * nb]  # (2 batch,)
        np.multiply(dr_hat, F32(gscale), out=wb[:nb])
        wb[nb:] = wb[:nb]
        if self.rows is None:
            # <stored, G> over the four tables, from quantities at hand
            cross = 2.0 * float(np.dot(w[:nb], dot)) + float(np.dot(wb[:nb], b_sum))
            pen = 0.0
        else:
            pen = self._rows_penalty(G, wb, X, joint, bu_u, bi_i, s, gscale)
            cross = 0.0
        Gb = np.bincount(joint, weights=wb, minlength=len(G)).astype(
            F32
        )  # (n_uq + n_iq,)
        if self.rows is None:
            flat = G.reshape(-1)  # ((n_uq + n_iq) k,)
            g2 = float(np.dot(flat, flat)) + float(np.dot(Gb, Gb))
        else:
            g2 = 0.0
        emb = {
            "P": (uq, G[:n_uq]),
            "Q": (iq, G[n_uq:]),
            "bu": (uq, Gb[:n_uq]),
            "bi": (iq, Gb[n_uq:]),
        }
        return loss, emb, cross, [], g2, pen

    def _rows_penalty(self, G, wb, X, joint, bu_u, bi_i, s, gscale):
        """Add the rows penalty's per-sample terms; return its value."""
        c, nb = self.rows, len(bu_u)
        flat = X.reshape(-1)  # (2 batch k,)
        half = len(flat) // 2

        # pen = (s^2 / batch) sum_b [c_P |P~[u_b]|^2 + ... + c_bi bi~[i_b]^2]
        pen = c["P"] * float(np.dot(flat[:half], flat[:half]))
        pen += c["Q"] * float(np.dot(flat[half:], flat[half:]))
        pen += c["bu"] * float(np.dot(bu_u, bu_u)) + c["bi"] * float(np.dot(bi_i, bi_i))
        pen *= s * s / nb

        # d pen / d P~[u_b] = (2 c_P / batch) s P~[u_b], per sample, from X
        if c["P"] or c["Q"]:
            wp = self.wp[: 2 * nb]  # (2 batch,)
            wp[:nb] = _rows_coef(c["P"], s, gscale, nb)
            wp[nb:] = _rows_coef(c["Q"], s, gscale, nb)
            scatter_rows(G, joint, wp, X, self.arange[: 2 * nb])

        # d pen / d bu~[u_b] = (2 c_bu / batch) s bu~[u_b], added to wb
        wb[:nb] += _rows_coef(c["bu"], s, gscale, nb) * bu_u
        wb[nb:] += _rows_coef(c["bi"], s, gscale, nb) * bi_i
        return pen


def _rows_coef(c, s, gscale, batch):
    """``gscale (2 c / batch) s`` in float32: a rows-penalty gradient weight."""
    return F32(gscale * 2.0 * c / batch * s)


def _rows_weights(c, s, gscale, batch):
    """:func:`_rows_coef` repeated once per sample, for :func:`scatter_rows`."""
    return np.full(batch, _rows_coef(c, s, gscale, batch), dtype=F32)  # (batch,)


class RankOneRows(NamedTuple):
    """Row gradients ``G = outer(coef, vec)`` kept as their two factors.

    Parameters
    ----------
    coef : ndarray of shape (n_rows,)
        One weight per distinct row.
    vec : ndarray of shape (k,)
        The direction every row moves along.
    """

    coef: np.ndarray
    vec: np.ndarray


def _n_layers(params):
    n = 0
    while f"W{n + 1}" in params:
        n += 1
    return n


def _lookup_x(params, ub, ib):
    """Look up the stored rows of the four tables for a batch."""
    pu = np.take(params["P"], ub, axis=0)  # (batch, k)
    qi = np.take(params["Q"], ib, axis=0)  # (batch, k)
    return pu, qi, params["bu"][ub], params["bi"][ib]


class DeepLinearKernel:
    """Step of the deep model with linear hidden activations, contracted.

    Parameters
    ----------
    params : dict of str to ndarray
        ``P``, ``Q``, ``bu``, ``bi`` and ``W1, b1, ..., WL, bL``.
    batch_size : int
        Largest batch.

    Notes
    -----
    With identity activations the dense chain is one affine map. Writing
    ``v_l = W_l W_(l+1) ... W_L`` (a vector of length ``in_l``; ``W_L`` has
    one column) and ``g_l = sum_b dr_hat_b a_l,b`` (``a_0 = x``)::

        r_hat   = x . v_1 + c,      c = sum_l b_l . v_(l+1)   (v_(L+1) = 1)
        g_0     = x.T dr_hat,       g_l = W_l.T g_(l-1) + b_l sum_b dr_hat_b
        dW_l    = outer(g_(l-1), v_(l+1)),   db_l = v_(l+1) sum_b dr_hat_b
        dx_b    = dr_hat_b v_1

    Each is the reference's batched formula (``dW_l = a_(l-1).T dz_l`` with
    ``dz_l = dr_hat outer v_(l+1)``) summed in another order, so a step
    costs matrix-vector products instead of ``(batch, h)`` matrix products.
    Every embedding row moves along ``v_1``, so
    ``dP[u] = (sum over b with u_b = u of dr_hat_b) v_1[:k]``.

    Rank-one SGD updates of the hidden kernels can be deferred
    (:meth:`defer_outer`): ``W = W_stored + A B.T`` with up to
    :attr:`max_pending` pending columns, folded in by one matrix product
    (:meth:`flush`). Products with ``W`` add the pending term, so every step
    still sees the updated kernel; the saving is one read and one write of
    each kernel per step.

    A rows penalty (weights ``c``) adds ``(2 c_P / batch) s P~[u_b]`` per
    sample to ``dP``, which is not along ``v_1``: the table gradients are
    then dense ``(n_uq, k)`` rows, ``outer(cu_dr, v_1[:k])`` plus the
    penalty terms scattered from the gathered ``P~[u]``, and
    ``pen = (s^2 / batch) sum_b [c_P |P~[u_b]|^2 + ...]``.
    """

    max_pending = 16
    blas_threads = 1

    def __init__(self, params, batch_size, rows=None):
        self.n_layers = _n_layers(params)
        self.k = params["P"].shape[1]
        self.rows = rows
        self.arange = np.arange(batch_size, dtype=np.int32)  # (batch,)
        self.pending = {}

    def defer_outer(self, params, key, alpha, a, b):
        """Queue ``W[key] += alpha outer(a, b)``; fold in when the queue fills."""
        W = params[key]
        if key not in self.pending:
            A = np.empty((self.max_pending, W.shape[0]), dtype=F32)  # (R, in)
            B = np.empty((self.max_pending, W.shape[1]), dtype=F32)  # (R, out)
            self.pending[key] = [A, B, 0]
        slot = self.pending[key]
        A, B, n = slot
        np.multiply(a, F32(alpha), out=A[n])
        B[n] = b
        slot[2] = n + 1
        if slot[2] == self.max_pending:
            self._flush_one(params, key)

    def _flush_one(self, params, key):
        A, B, n = self.pending[key]
        if n:
            params[key] += A[:n].T @ B[:n]  # (in, out)
        self.pending[key][2] = 0

    def flush(self, params):
        """Fold every pending update into ``params``."""
        for key in self.pending:
            self._flush_one(params, key)

    def _matvec(self, params, layer, vec):
        """``W_layer @ vec`` including pending updates."""
        key = f"W{layer}"
        out = params[key] @ vec  # (in,)
        if key in self.pending and self.pending[key][2]:
            A, B, n = self.pending[key]
            out += (B[:n] @ vec) @ A[:n]
        return out

    def _rmatvec(self, params, layer, vec):
        """``vec @ W_layer`` including pending updates."""
        key = f"W{layer}"
        out = vec @ params[key]  # (out,)
        if key in self.pending and self.pending[key][2]:
            A, B, n = self.pending[key]
            out += (A[:n] @ vec) @ B[:n]
        return out

    def _contract(self, params):
        """``v_l`` for every layer and the constant ``c``."""
        L = self.n_layers
        v = {L + 1: np.ones(1, dtype=F32), L: params[f"W{L}"][:, 0]}
        for layer in range(L - 1, 0, -1):
            v[layer] = self._matvec(params, layer, v[layer + 1])  # (in_l,)
        c = sum(float(params[f"b{layer}"] @ v[layer + 1]) for layer in range(1, L + 1))
        return v, c

    def step(self, params, s, batch, loss_fn, gscale):
        """Run one step; see the module docstring for the outputs."""
        ub, ib, rb, cu, uq, ci, iq = batch[:7]
        k, L = self.k, self.n_layers

        # forward: r_hat = s (x~ . v_1) + c, x~ in stored form
        v, c = self._contract(params)
        pu, qi, bu_u, bi_i = _lookup_x(params, ub, ib)
        xv = pu @ v[1][:k] + qi @ v[1][k : 2 * k]  # (batch,)
        xv += bu_u * v[1][2 * k] + bi_i * v[1][2 * k + 1]
        r_hat = F32(s) * xv + F32(c)  # (batch,)
        loss, dr_hat = loss_fn(r_hat, rb)  # scalar, (batch,)

        # g_0 = x.T dr_hat, then g_l = W_l.T g_(l-1) + b_l sum(dr_hat)
        sum_dr = F32(dr_hat.sum(dtype=np.float64))
        g = {
            0: F32(s)
            * np.concatenate(
                [dr_hat @ pu, dr_hat @ qi, [dr_hat @ bu_u, dr_hat @ bi_i]]
            ).astype(F32)
        }  # (2k + 2,)
        for layer in range(1, L):
            g[layer] = self._rmatvec(params, layer, g[layer - 1])
            g[layer] += params[f"b{layer}"] * sum_dr

        # dense grads: dW_l = outer(g_(l-1), v_(l+1)), db_l = sum(dr_hat) v_(l+1)
        dense = []
        for layer in range(1, L):
            dense.append((f"W{layer}", "outer", g[layer - 1], v[layer + 1]))
            dense.append((f"b{layer}", "array", sum_dr * v[layer + 1], None))
        dense.append((f"W{L}", "column", g[L - 1], None))
        dense.append((f"b{L}", "array", np.array([sum_dr], dtype=F32), None))

        # every row moves along v_1: dP[u] = (sum of its dr_hat) v_1[:k]
        cu_dr = _segment_sum(dr_hat * gscale, cu, len(uq))  # (n_uq,)
        ci_dr = _segment_sum(dr_hat * gscale, ci, len(iq))  # (n_iq,)
        if self.rows is not None:
            x = (pu, qi, bu_u, bi_i)
            emb, pen = self._rows_emb(batch, x, cu_dr, ci_dr, v[1], s, gscale)
            return loss, emb, 0.0, dense, 0.0, pen
        # NOTE: G_P = outer(cu_dr, v_1[:k]) stays factored, see RankOneRows
        emb = {
            "P": (uq, RankOneRows(cu_dr, v[1][:k])),  # (n_uq, k)
            "Q": (iq, RankOneRows(ci_dr, v[1][k : 2 * k])),  # (n_iq, k)
            "bu": (uq, cu_dr * v[1][2 * k]),  # (n_uq,)
            "bi": (iq, ci_dr * v[1][2 * k + 1]),  # (n_iq,)
        }

        # <stored, G>: sum_b gscale dr_hat_b (x~_b . v_1)
        cross = float(gscale) * float(dr_hat @ xv)
        return loss, emb, cross, dense, None, 0.0

    def _rows_emb(self, batch, x, cu_dr, ci_dr, v1, s, gscale):
        """Table gradients with the rows penalty, and the penalty's value."""
        ub, ib, rb, cu, uq, ci, iq = batch[:7]
        pu, qi, bu_u, bi_i = x
        c, k, nb = self.rows, self.k, len(ub)
        arange = self.arange[:nb]

        # pen = (s^2 / batch) sum_b [c_P |P~[u_b]|^2 + ... + c_bi bi~[i_b]^2]
        pen = sum(
            c[key] * float(np.dot(W.reshape(-1), W.reshape(-1)))
            for key, W in zip(("P", "Q", "bu", "bi"), x)
        )
        pen *= s * s / nb

        # data: outer(sum of dr_hat, v_1); penalty: (2 c / batch) s W~[idx_b]
        GP = np.outer(cu_dr, v1[:k])  # (n_uq, k)
        scatter_rows(GP, cu, _rows_weights(c["P"], s, gscale, nb), pu, arange)
        GQ = np.outer(ci_dr, v1[k : 2 * k])  # (n_iq, k)
        scatter_rows(GQ, ci, _rows_weights(c["Q"], s, gscale, nb), qi, arange)
        Gbu = cu_dr * v1[2 * k]  # (n_uq,)
        Gbu += _segment_sum(bu_u * _rows_coef(c["bu"], s, gscale, nb), cu, len(uq))
        Gbi = ci_dr * v1[2 * k + 1]  # (n_iq,)
        Gbi += _segment_sum(bi_i * _rows_coef(c["bi"], s, gscale, nb), ci, len(iq))
        emb = {"P": (uq, GP), "Q": (iq, GQ), "bu": (uq, Gbu), "bi": (iq, Gbi)}
        return emb, pen


class DeepBatchedKernel:
    """Step of the deep model with any activation, layer by layer.

    Parameters
    ----------
    params : dict of str to ndarray
        Deep-model parameters.
    batch_size : int
        Largest batch.
    activation : str
        Key of :data:`npmf.layers.ACTIVATIONS`.

    Notes
    -----
    The reference's forward and backward (:mod:`npmf.models.mlp`), with the
    first layer computed once per *distinct* user and item of the batch.
    Split ``W1`` by the blocks of ``x = [P[u], Q[i], bu[u], bi[i]]`` and let
    ``Wu = [W1[:k]; W1[2k]]``, ``Wi = [W1[k:2k]; W1[2k+1]]`` act on the
    user row ``xu = [P~[uq], bu~[uq]]`` and the item row ``xi``. With ``Su``
    the ``(n_uq, batch)`` 0/1 matrix of which sample has which user::

        z1      = s ((xu Wu)[cu] + (xi Wi)[ci]) + b1
        dWu     = s xu.T (Su dz1),     dWi = s xi.T (Si dz1)
        dP[uq]  = (Su dz1) W1[:k].T,   dbu[uq] = (Su dz1) W1[2k]

    which is ``x.T dz1`` and ``dz1 W1.T`` summed over repeated ids first:
    the three ``W1`` products shrink from ``batch`` rows to ``n_uq`` and
    ``n_iq`` rows (about 2/3 of them on ml-100k at batch 512), and the
    table gradients come out already summed per row.

    A rows penalty (weights ``c``) works on the same distinct rows, with
    ``count_u`` the number of the batch's samples of user ``u``::

        pen      = (s^2 / batch) sum_u count_u (c_P |P~[u]|^2 + c_bu bu~[u]^2)
                   + (the same over items)
        dP[uq]  += (2 c_P / batch) s count_u P~[uq],   dbu[uq] alike

    Every array a step writes is allocated once, for ``batch_size`` rows,
    and written in place (``out=``) step after step; the gradients a step
    returns are views of these buffers, valid until the next step. NOTE:
    fresh arrays of a few MB each step (about 30 MB in all at the tutorial's
    sizes) come back from the allocator as new pages to fault in and cold
    cache lines; the kept buffers made a relu 2048-256 step 1.5 to 2.1 ms
    faster (of 25 to 34 ms), measured as the median paired difference of
    16-step chunks run in turns with and without them.
    """

    blas_threads = None

    def __init__(self, params, batch_size, activation, rows=None):
        self.rows = rows
        self.n_layers = _n_layers(params)
        self.k = k = params["P"].shape[1]
        self.act = ACTIVATIONS[activation]
        self.arange = np.arange(batch_size, dtype=np.int32)  # (batch,)
        self.ones = np.ones(batch_size, dtype=F32)  # (batch,)

        b, h1 = batch_size, params["W1"].shape[1]
        dense = [f"W{layer}" for layer in range(1, self.n_layers + 1)]
        self.x = np.empty((2, b, k + 1), dtype=F32)  # [xu, xi]
        self.W_side = np.empty((2, k + 1, h1), dtype=F32)  # [Wu, Wi]
        # [xu Wu, xi Wi] in the forward pass, [Su dz1, Si dz1] in the backward
        self.wide = np.empty((2, b, h1), dtype=F32)
        # z_l, then a_l = f(z_l) in place; the last holds r_hat
        self.acts = [np.empty((b, params[key].shape[1]), dtype=F32) for key in dense]
        # da_(l-1) = dz_l W_l.T, then dz_(l-1) in place, for l = 2 .. L
        self.da = [None] + [
            np.empty((b, params[key].shape[0]), dtype=F32) for key in dense[1:]
        ]
        self.dW = {key: np.empty_like(params[key]) for key in dense}
        # [a_l > 0] of relu's backward, for l = 1 .. L - 1
        relu = activation == "relu"
        self.mask = [
            np.empty((b, params[key].shape[1]), dtype=bool) if relu else None
            for key in dense[:-1]
        ]
        self.sx = np.empty((2, b, k + 1), dtype=F32)  # [s xu, s xi]
        self.dx = np.empty((2, b, k), dtype=F32)  # [dP[uq], dQ[iq]]
        self.dbias = np.empty((2, b), dtype=F32)  # [dbu[uq], dbi[iq]]

    def _forward(self, z):
        """Apply the activation to the layer's buffer ``z`` in place."""
        if self.act.name == "relu":
            np.maximum(z, F32(0), out=z)  # (batch, h)
        else:
            z[...] = self.act.forward(z)  # (batch, h)

    def _backward(self, da, a, mask):
        """Turn ``da`` into ``dz`` in place, from the activation output ``a``.

        NOTE: for relu ``da * [a > 0]`` in place (``mask`` holds ``a > 0``)
        is five times faster than the reference's ``np.where``; the two
        differ only where ``da`` is already non-finite, which the loss check
        reports.
        """
        if self.act.name == "relu":
            np.greater(a, F32(0), out=mask)  # (batch, h)
            np.multiply(da, mask, out=da)  # (batch, h)
        else:
            da[...] = self.act.backward(da, a)  # (batch, h)

    def _first_layer(self, params, s, batch):
        """``z1`` and the distinct rows ``xu``, ``xi`` it was built from."""
        ub, ib, rb, cu, uq, ci, iq = batch[:7]
        k, W1, nb = self.k, params["W1"], len(cu)

        # distinct rows with their bias: xu = [P~[uq], bu~[uq]]
        xu, xi = self.x[0, : len(uq)], self.x[1, : len(iq)]  # (n, k + 1)
        params["P"].take(uq, axis=0, out=xu[:, :k], mode="clip")
        xu[:, k] = params["bu"][uq]
        params["Q"].take(iq, axis=0, out=xi[:, :k], mode="clip")
        xi[:, k] = params["bi"][iq]

        # z1 = s ((xu Wu)[cu] + (xi Wi)[ci]) + b1
        Wu, Wi = self.W_side  # (k + 1, h1)
        np.concatenate([W1[:k], W1[2 * k : 2 * k + 1]], out=Wu)
        np.concatenate([W1[k : 2 * k], W1[2 * k + 1 :]], out=Wi)
        Gu, Gi = self.wide[0, : len(uq)], self.wide[1, : len(iq)]  # (n, h1)
        np.matmul(xu, Wu, out=Gu)
        np.matmul(xi, Wi, out=Gi)
        z = self.acts[0][:nb]  # (batch, h1)
        # NOTE: mode="clip" skips the bounds pass (cu < n_uq by construction);
        # with the default "raise" and out=, take writes a temporary first
        Gu.take(cu, axis=0, out=z, mode="clip")
        # z[b] += (xi Wi)[ci[b]], gathered and added in one pass
        scatter_rows(z, self.arange[:nb], self.ones[:nb], Gi, ci)
        # NOTE: s and b1 come after the sum, as b1 comes after x W1 in the
        # reference: folding s into xu before the GEMM (n_uq rows, not batch)
        # moved the rounding of a pre-activation at 0 and lost Keras parity
        # of a 64-16 relu epoch
        if s != 1.0:
            z *= F32(s)
        z += params["b1"]
        return z, xu, xi

    def _first_layer_backward(self, params, s, batch, xu, xi, dz, gscale):
        """Backward through the first layer from ``dz1``.

        Returns ``dW1``, ``db1``, the compact table gradients, ``cross`` and
        the rows penalty's value (0.0 without one).
        """
        ub, ib, rb, cu, uq, ci, iq = batch[:7]
        k, W1 = self.k, params["W1"]
        nb, n_uq, n_iq = dz.shape[0], len(uq), len(iq)
        arange, ones = self.arange[:nb], self.ones[:nb]

        # sum dz1 over the samples of each distinct user / item
        Du, Di = self.wide[0, :n_uq], self.wide[1, :n_iq]  # (n, h1)
        Du.fill(0)
        scatter_rows(Du, cu, ones, dz, arange)
        Di.fill(0)
        scatter_rows(Di, ci, ones, dz, arange)

        # dW1 = (s x~).T dz1, each block written in place; s x~ has n_uq rows
        su, si = xu, xi  # (n, k + 1)
        if s != 1.0:
            su = np.multiply(xu, F32(s), out=self.sx[0, :n_uq])
            si = np.multiply(xi, F32(s), out=self.sx[1, :n_iq])
        dW1 = self.dW["W1"]  # (2k + 2, h1)
        np.matmul(su[:, :k].T, Du, out=dW1[:k])  # (k, h1)
        np.matmul(su[:, k], Du, out=dW1[2 * k])  # (h1,)
        np.matmul(si[:, :k].T, Di, out=dW1[k : 2 * k])  # (k, h1)
        np.matmul(si[:, k], Di, out=dW1[2 * k + 1])  # (h1,)

        # dx per distinct row: dP[uq] = Du W1[:k].T, dbu[uq] = Du W1[2k]
        dP, dQ = self.dx[0, :n_uq], self.dx[1, :n_iq]  # (n, k)
        dbu, dbi = self.dbias[0, :n_uq], self.dbias[1, :n_iq]  # (n,)
        np.matmul(Du, W1[:k].T, out=dP)
        np.matmul(Di, W1[k : 2 * k].T, out=dQ)
        np.matmul(Du, W1[2 * k], out=dbu)
        np.matmul(Di, W1[2 * k + 1], out=dbi)
        if self.rows is None:
            cross = float(gscale) * (
                float(np.einsum("rk,rk->", xu[:, :k], dP))
                + float(np.einsum("rk,rk->", xi[:, :k], dQ))
                + float(xu[:, k] @ dbu)
                + float(xi[:, k] @ dbi)
            )
            pen = 0.0
        else:
            cross = 0.0
            pen = self._rows_penalty(s, nb, (cu, xu, dP, dbu), ("P", "bu"))
            pen += self._rows_penalty(s, nb, (ci, xi, dQ, dbi), ("Q", "bi"))
        if gscale != 1.0:
            g = F32(gscale)
            for G in (dP, dQ, dbu, dbi):
                G *= g
        emb = {"P": (uq, dP), "Q": (iq, dQ), "bu": (uq, dbu), "bi": (iq, dbi)}
        return dW1, Du.sum(axis=0), emb, cross, pen

    def _rows_penalty(self, s, nb, side, keys):
        """Add one side's rows-penalty gradient in place; return its value.

        ``side`` is ``(compact ids, [W~[rows], b~[rows]], dW, db)`` of the
        users or of the items, ``keys`` their table names.
        """
        compact, x, dW, db = side
        (c_W, c_b), k = (self.rows[key] for key in keys), self.k

        # count_u: samples of each distinct row in the batch
        count = np.bincount(compact, minlength=len(x)).astype(F32)  # (n_rows,)

        # pen = (s^2 / batch) sum_u count_u (c_W |W~[u]|^2 + c_b b~[u]^2)
        xc = x * count[:, None]  # (n_rows, k + 1)
        sq_b = float(xc[:, k] @ x[:, k])
        pen = c_W * (float(np.vdot(xc, x)) - sq_b) + c_b * sq_b

        # d pen / d W[u] = (2 c_W / batch) s count_u W~[u]
        xc[:, :k] *= F32(2.0 * c_W / nb * s)
        dW += xc[:, :k]
        db += F32(2.0 * c_b / nb * s) * xc[:, k]
        return pen * s * s / nb

    def step(self, params, s, batch, loss_fn, gscale):
        """Run one step; see the module docstring for the outputs."""
        L, nb = self.n_layers, len(batch[0])

        # first layer on distinct rows, then a = f(z); z = a @ W + b
        z, xu, xi = self._first_layer(params, s, batch)
        inputs = [None]
        for layer in range(2, L + 1):
            self._forward(z)
            inputs.append(z)  # (batch, in)
            z = self.acts[layer - 1][:nb]  # (batch, out)
            np.matmul(inputs[-1], params[f"W{layer}"], out=z)
            z += params[f"b{layer}"]
        loss, dr_hat = loss_fn(z[:, 0], batch[2])  # scalar, (batch,)

        # dense layers in reverse: dW = a_in.T dz, db = sum dz, da_in = dz W.T
        dense = []
        dz = dr_hat[:, None]  # (batch, 1)
        for layer in range(L, 1, -1):
            key, a_in = f"W{layer}", inputs[layer - 1]
            W, dW, da = params[key], self.dW[key], self.da[layer - 1][:nb]
            np.matmul(a_in.T, dz, out=dW)  # (in, out)
            dense.append((key, "array", dW, None))
            dense.append((f"b{layer}", "array", dz.sum(axis=0), None))  # (out,)
            if W.shape[1] == 1:
                # NOTE: with one output unit each element is the single
                # product dz[b, 0] W[j, 0] either way, and the broadcast
                # multiply is about 4 times faster than a GEMM of inner size 1
                # (measured 0.13 against 0.63 ms at (256, 512))
                np.multiply(dz, W[:, 0], out=da)  # (batch, in)
            else:
                np.matmul(dz, W.T, out=da)  # (batch, in)
            mask = self.mask[layer - 2]  # (batch, in) or None
            self._backward(da, a_in, None if mask is None else mask[:nb])
            dz = da

        # first layer: dW1, db1 and the table gradients per distinct row
        dW1, db1, emb, cross, pen = self._first_layer_backward(
            params, s, batch, xu, xi, dz, gscale
        )
        dense += [("W1", "array", dW1, None), ("b1", "array", db1, None)]
        g2 = None if self.rows is None else 0.0
        return loss, emb, cross, dense, g2, pen
