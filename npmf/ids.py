"""Mapping raw user and item ids to dense row indices and back."""

import numpy as np


class IdMap:
    """A bijection between raw ids, kept exactly as given, and ``0..n-1``.

    Parameters
    ----------
    ids : array-like of shape (n,)
        Distinct raw ids in index order. Integers stay integers, anything
        else is kept as text.

    Attributes
    ----------
    ids : ndarray of shape (n,)
        Raw id of each index (``int64`` or unicode, never ``object``, so a
        model file needs no pickle).

    Notes
    -----
    Tables are sized by the number of distinct ids, so memory never depends
    on how large the id values are.
    """

    def __init__(self, ids):
        ids = _as_id_array(ids)
        if ids.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {ids.shape}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids must be distinct")
        self.ids = ids
        self._index = {key: n for n, key in enumerate(ids.tolist())}

    @classmethod
    def from_values(cls, values):
        """Build a map over the distinct values, in sorted order.

        Parameters
        ----------
        values : array-like of shape (n,)
            Raw ids, possibly repeated.

        Returns
        -------
        IdMap
            Map with one index per distinct value.
        """
        return cls(np.unique(_as_id_array(values)))

    def __len__(self):
        return len(self.ids)

    def __contains__(self, raw):
        return _key(raw) in self._index

    def to_index(self, values, missing=None):
        """Map raw ids to indices.

        Parameters
        ----------
        values : array-like of shape (n,)
            Raw ids.
        missing : int or None, default=None
            Index returned for ids not in the map; when None an unknown id
            raises.

        Returns
        -------
        ndarray of int64 of shape (n,)
            Indices.

        Raises
        ------
        KeyError
            If an id is unknown and ``missing`` is None.
        """
        values = _as_id_array(values)
        index = self._index
        out = np.empty(len(values), dtype=np.int64)
        for n, raw in enumerate(values.tolist()):
            found = index.get(raw, missing)
            if found is None:
                raise KeyError(f"unknown id {raw!r}")
            out[n] = found
        return out

    def to_raw(self, idx):
        """Map indices back to raw ids.

        Parameters
        ----------
        idx : array-like of int of shape (n,)
            Indices in ``[0, len(self))``.

        Returns
        -------
        ndarray of shape (n,)
            Raw ids.

        Raises
        ------
        IndexError
            If an index is negative or not below ``len(self)``.
        """
        idx = np.asarray(idx, dtype=np.int64)
        check_indices(idx, len(self), "index")
        return self.ids[idx]


def check_indices(idx, n_rows, name):
    """Raise unless every index lies in ``[0, n_rows)``.

    Parameters
    ----------
    idx : ndarray of int
        Indices to check.
    n_rows : int
        Table size.
    name : str
        What the indices are, for the message (``"u"``, ``"i"``).

    Raises
    ------
    IndexError
        Naming the first offending index, its position and the table size.
        NumPy would otherwise read ``-1`` as the last row.
    """
    idx = np.asarray(idx)
    if idx.size == 0:
        return
    bad = np.flatnonzero((idx < 0) | (idx >= n_rows))
    if bad.size:
        pos = int(bad[0])
        raise IndexError(
            f"{name}[{pos}] = {int(idx[pos])} is outside the table of {n_rows} rows "
            f"(valid: 0..{n_rows - 1}); {bad.size} index(es) out of range"
        )


def _key(raw):
    if isinstance(raw, (np.integer,)):
        return int(raw)
    if isinstance(raw, np.str_):
        return str(raw)
    return raw


def _as_id_array(values):
    """Return ids as an int64 or unicode array (never object)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind == "f":
        if np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        raise ValueError("ids must be integers or text, got non-integral numbers")
    # object or bytes: keep ints as ints when all are ints, else text
    items = arr.tolist()
    if all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in items):
        return np.asarray(items, dtype=np.int64)
    return np.asarray([str(x) for x in items], dtype=str)
