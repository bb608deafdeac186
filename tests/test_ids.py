"""Tests of raw-id to index mapping."""

import numpy as np
import pytest

from npmf.ids import IdMap, check_indices


def test_idmap_round_trips_string_ids():
    """String ids map to 0..n-1 and back exactly."""
    raw = np.array(["u7", "alice", "u7", "bob", "007"])
    m = IdMap.from_values(raw)
    assert len(m) == 4
    idx = m.to_index(raw)
    assert m.to_raw(idx).tolist() == raw.tolist()
    assert "007" in m and 7 not in m


def test_idmap_sparse_huge_ids_sized_by_count():
    """Sparse, huge ids give one row per distinct id, kept as given."""
    m = IdMap.from_values([10, 20, 30, 40, 700001, 20])
    assert len(m) == 5
    assert m.ids.dtype == np.int64
    assert m.to_index([700001, 10]).tolist() == [4, 0]


def test_idmap_unknown_id():
    """Unknown ids raise, or get the ``missing`` index when one is given."""
    m = IdMap.from_values([1, 2])
    with pytest.raises(KeyError, match="unknown id 3"):
        m.to_index([3])
    assert m.to_index([3, 2], missing=-1).tolist() == [-1, 1]


@pytest.mark.parametrize("bad", [-1, 3])
def test_check_indices_names_index_and_table(bad):
    """-1 and n_rows are refused, naming the index and the table size."""
    with pytest.raises(
        IndexError, match=rf"u\[1\] = {bad} is outside the table of 3 rows"
    ):
        check_indices(np.array([0, bad]), 3, "u")


def test_idmap_never_object_dtype():
    """Mixed ids become text, so a model file needs no pickle."""
    m = IdMap.from_values(np.array([1, "a"], dtype=object))
    assert m.ids.dtype.kind == "U"
