import numpy as np
import pytest

from framework import Collection


def make():
    return Collection.from_counts({"a": np.arange(6.0), "cov": np.arange(24.0).reshape(6, 2, 2)}, [2, 0, 3, 1],
                                  event_numbers=[10, 11, 12, 13])


def test_offsets_and_indices():
    c = make()
    assert c.n_events == 4 and len(c) == 6
    np.testing.assert_array_equal(c.offsets, [0, 2, 2, 5, 6])
    np.testing.assert_array_equal(c.event_index, [0, 0, 2, 2, 2, 3])
    np.testing.assert_array_equal(c.local_index, [0, 1, 0, 1, 2, 0])
    np.testing.assert_array_equal(c.event_number, [10, 10, 12, 12, 12, 13])
    np.testing.assert_array_equal(c.event(2)["a"], [2, 3, 4])


def test_select_rows_keeps_events():
    c = make().select(np.array([True, False, False, True, True, False]))
    assert c.n_events == 4
    np.testing.assert_array_equal(c.counts, [1, 0, 2, 0])
    np.testing.assert_array_equal(c["a"], [0, 3, 4])
    assert c["cov"].shape == (3, 2, 2)


def test_select_lazy_equals_select_and_gathers_on_demand():
    c = make()
    mask = np.array([True, False, False, True, True, False])
    eager, lazy = c.select(mask), c.select_lazy(mask)
    assert lazy._columns._done == {}  # nothing gathered yet
    np.testing.assert_array_equal(lazy.counts, eager.counts)
    np.testing.assert_array_equal(lazy["a"], eager["a"])
    assert set(lazy._columns._done) == {"a"}
    assert lazy.names == eager.names and "cov" in lazy and "b" not in lazy
    np.testing.assert_array_equal(lazy.columns["cov"], eager["cov"])
    np.testing.assert_array_equal(lazy.select(np.array([False, True, True]))["a"], [3, 4])
    with pytest.raises(KeyError, match="no column 'b'"):
        lazy["b"]
    lazy2 = c.select_lazy(mask)
    np.testing.assert_array_equal(lazy2.take("cov", [2, 0]), eager["cov"][[2, 0]])
    assert "cov" not in lazy2._columns._done  # taken from the parent, not gathered
    out = np.zeros((2, 3, 2, 2))
    lazy.take("cov", np.array([1, 2]), out=out[:, 1])
    np.testing.assert_array_equal(out[:, 1], eager["cov"][[1, 2]])
    np.testing.assert_array_equal(eager.take("a", [0, 2]), [0, 4])


def test_select_events_and_concat_roundtrip():
    c = make()
    first = c.select_events(np.array([True, True, False, False]))
    second = c.select_events(np.array([False, False, True, True]))
    back = Collection.concat([first, second])
    np.testing.assert_array_equal(back.offsets, c.offsets)
    np.testing.assert_array_equal(back["cov"], c["cov"])
    np.testing.assert_array_equal(back.event_numbers, c.event_numbers)


def test_global_index_of_within_event_references():
    c = make()
    np.testing.assert_array_equal(c.global_index([2, 2, 0], [1, -1, 0]), [3, -1, 0])


def test_bad_shapes_rejected():
    with pytest.raises(ValueError):
        Collection({"a": np.zeros(3)}, [0, 2])
    with pytest.raises(ValueError):
        Collection({"a": np.zeros(2)}, [0, 3, 2])
