"""Batch layout and row scatter for the fast training engines.

An epoch's permutation is known before its first step, so the work that
only depends on the ids (which rows a batch touches, and where each sample's
gradient goes) is done once per chunk of batches, vectorised, instead of once
per batch.
"""

from typing import NamedTuple

import numpy as np

_COO_KERNEL = []


def _coo_kernel():
    """Return scipy's ``coo_matmat_dense``, or None if this scipy lacks it.

    NOTE: imported on first use, so importing the trainer does not pay for
    ``scipy.sparse``; the kernel is private to scipy, hence the guard.
    """
    if not _COO_KERNEL:
        try:
            from scipy.sparse._sparsetools import coo_matmat_dense
        except ImportError:  # pragma: no cover - depends on the installed scipy
            coo_matmat_dense = None
        _COO_KERNEL.append(coo_matmat_dense)
    return _COO_KERNEL[0]


CHUNK_BATCHES = 64
"""Batches laid out together; bounds the layout's memory to a few batches."""


def scatter_rows(out, out_rows, weights, src, src_rows):
    """Accumulate weighted source rows into rows of ``out``, in place.

    Parameters
    ----------
    out : ndarray of shape (n_out, k), float32, C-contiguous
        Updated in place.
    out_rows : ndarray of shape (nnz,), int32
        Row of ``out`` each term goes to; repeats accumulate.
    weights : ndarray of shape (nnz,), float32
        Weight of each term.
    src : ndarray of shape (n_src, k), float32, C-contiguous
        Source rows.
    src_rows : ndarray of shape (nnz,), int32
        Row of ``src`` each term reads.

    Notes
    -----
    ``out[out_rows[n]] += weights[n] * src[src_rows[n]]`` for every ``n``,
    which is ``np.add.at(out, out_rows, weights[:, None] * src[src_rows])``
    without the ``(nnz, k)`` temporary and about 50 times faster. It runs
    scipy's ``coo_matmat_dense`` (the sparse-times-dense kernel behind
    ``scipy.sparse.coo_array @ ndarray``) on the caller's arrays.

    NOTE: that kernel is private to scipy; when it is missing the same sum
    is taken with ``np.add.at`` (slow, still exact).
    """
    kernel = _coo_kernel()
    if kernel is not None:
        kernel(len(out_rows), out.shape[1], out_rows, src_rows, weights, src, out)
        return
    np.add.at(out, out_rows, weights[:, None] * src[src_rows])  # pragma: no cover


def _compact(idx, n_rows, batch_size):
    """Find the distinct rows of each batch and each sample's place among them.

    Parameters
    ----------
    idx : ndarray of shape (n,), int32
        Row ids of consecutive batches (all full but the last).
    n_rows : int
        Rows of the table ``idx`` points into (bounds the sort keys).
    batch_size : int
        Batch size.

    Returns
    -------
    rows : ndarray of shape (n_groups,), int32
        Distinct rows of batch 0, then of batch 1, ..., each group sorted.
    bounds : ndarray of shape (n_batches + 1,)
        Batch ``b`` owns ``rows[bounds[b]:bounds[b + 1]]``.
    compact : ndarray of shape (n,), int32
        ``rows[bounds[b] + compact[s]] == idx[s]`` for sample ``s`` of batch
        ``b``.
    """
    n = len(idx)
    n_full = n // batch_size
    # NOTE: no full-batch part when batch_size exceeds n; its (0, batch_size)
    # shape would still cost an arange of batch_size positions
    parts = [idx[: n_full * batch_size].reshape(n_full, batch_size)] if n_full else []
    if n > n_full * batch_size:
        parts.append(idx[n_full * batch_size :].reshape(1, -1))
    rows, counts, compact = [], [], []
    # the position rides in the low bits of the sort key; int32 keys (when
    # id and position fit in 31 bits) sort about twice as fast as int64
    shift = max(int(batch_size - 1).bit_length(), 1)
    key_type = np.int32 if (n_rows << shift) < 2**31 else np.int64
    for X in parts:
        # sort each batch (one row of X) on its own; one plain sort of the
        # packed keys gives the ids in order and where each came from
        position = np.arange(X.shape[1], dtype=key_type)  # (batch,)
        packed = (X.astype(key_type) << shift) | position  # (n_batches, batch)
        packed.sort(axis=1)
        S = (packed >> shift).astype(np.int32)  # (n_batches, batch)
        order = (packed & ((1 << shift) - 1)).astype(np.intp)  # (n_batches, batch)

        # a group starts wherever the sorted id changes
        first = np.ones(S.shape, dtype=bool)  # (n_batches, batch)
        np.not_equal(S[:, 1:], S[:, :-1], out=first[:, 1:])
        local = np.cumsum(first, axis=1, dtype=np.int32) - 1  # (n_batches, batch)

        # scatter each sample's group number back to its place
        C = np.empty_like(local)  # (n_batches, batch)
        np.put_along_axis(C, order, local, axis=1)
        rows.append(S[first])
        counts.append(first.sum(axis=1))
        compact.append(C.ravel())
    bounds = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    return np.concatenate(rows), bounds, np.concatenate(compact)


class Batch(NamedTuple):
    """One batch and its scatter layout.

    Parameters
    ----------
    u, i : ndarray of shape (batch,), int32
        User and item ids.
    r : ndarray of shape (batch,), float32
        Centred targets.
    cu : ndarray of shape (batch,), int32
        Each sample's index into ``uq``.
    uq : ndarray of shape (n_uq,), int32
        The batch's distinct users, sorted.
    ci, iq : ndarray
        The same for items.
    joint : ndarray of shape (2 batch,), int32
        ``[cu, n_uq + ci]``: sample rows in a stacked ``(n_uq + n_iq, k)``
        gradient of both tables.
    """

    u: np.ndarray
    i: np.ndarray
    r: np.ndarray
    cu: np.ndarray
    uq: np.ndarray
    ci: np.ndarray
    iq: np.ndarray
    joint: np.ndarray


def _joint(ucompact, icompact, ubounds, batch_size):
    """``[cu, n_uq + ci]`` of every batch, batch after batch."""
    n = len(ucompact)
    sizes = np.minimum(batch_size, n - batch_size * np.arange(len(ubounds) - 1))
    shifted = icompact + np.repeat(np.diff(ubounds), sizes).astype(np.int32)  # (n,)
    n_full = n // batch_size * batch_size
    full = np.concatenate(
        [
            ucompact[:n_full].reshape(-1, batch_size),
            shifted[:n_full].reshape(-1, batch_size),
        ],
        axis=1,
    )  # (n_full_batches, 2 batch)
    return np.concatenate([full.ravel(), ucompact[n_full:], shifted[n_full:]])


def _epoch_chunks(u, i, r, order, batch_size):
    """Yield the epoch's samples in order, :data:`CHUNK_BATCHES` batches at a time.

    Each chunk is ``(u, i, r)`` as contiguous int32, int32 and float32
    copies, so no epoch-sized copy of the ids is made.
    """
    n = len(r) if order is None else len(order)
    chunk = CHUNK_BATCHES * batch_size
    for start in range(0, n, chunk):
        sel = slice(start, min(start + chunk, n))
        if order is not None:
            sel = order[sel]
        uc = np.ascontiguousarray(u[sel], dtype=np.int32)  # (chunk,)
        ic = np.ascontiguousarray(i[sel], dtype=np.int32)  # (chunk,)
        rc = np.ascontiguousarray(r[sel], dtype=np.float32)  # (chunk,)
        yield uc, ic, rc


def epoch_batches(u, i, r, order, batch_size, n_users, n_items):
    """Yield one epoch's batches with their scatter layout.

    Parameters
    ----------
    u, i : ndarray of shape (n,)
        User and item indices.
    r : ndarray of shape (n,)
        Centred targets.
    order : ndarray of shape (n_train,) or None
        Samples to train on, in order (a permutation, or part of one);
        every sample in array order when None.
    batch_size : int
        Batch size; the last partial batch is kept.
    n_users, n_items : int
        Table sizes.

    Yields
    ------
    Batch
        The batch's ids, targets and scatter layout.
    """
    for uc, ic, rc in _epoch_chunks(u, i, r, order, batch_size):
        # distinct rows per batch, for both tables, and their stacking
        urows, ubounds, ucompact = _compact(uc, n_users, batch_size)
        irows, ibounds, icompact = _compact(ic, n_items, batch_size)
        joint = _joint(ucompact, icompact, ubounds, batch_size)  # (2 chunk,)
        for b in range(len(ubounds) - 1):
            s = slice(b * batch_size, (b + 1) * batch_size)
            size = len(uc[s])
            yield Batch(
                uc[s],
                ic[s],
                rc[s],
                ucompact[s],
                urows[ubounds[b] : ubounds[b + 1]],
                icompact[s],
                irows[ibounds[b] : ibounds[b + 1]],
                joint[2 * b * batch_size : 2 * b * batch_size + 2 * size],
            )


def epoch_slices(u, i, r, order, batch_size):
    """Yield one epoch's batches as plain ``(u, i, r)`` slices, in order.

    Parameters
    ----------
    u, i : ndarray of shape (n,)
        User and item indices.
    r : ndarray of shape (n,)
        Centred targets.
    order : ndarray of shape (n_train,) or None
        Samples to train on, in order; every sample in array order when None.
    batch_size : int
        Batch size; the last partial batch is kept.

    Yields
    ------
    u, i : ndarray of shape (batch,), int32
    r : ndarray of shape (batch,), float32

    Notes
    -----
    For kernels that scatter per sample straight into the tables and need
    no distinct-row layout (:class:`npmf.fast.engines.MFSGDEngine`); the
    samples are gathered chunk by chunk as for :func:`epoch_batches`.
    """
    for uc, ic, rc in _epoch_chunks(u, i, r, order, batch_size):
        for b in range(0, len(rc), batch_size):
            yield uc[b : b + batch_size], ic[b : b + batch_size], rc[b : b + batch_size]
