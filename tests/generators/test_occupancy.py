"""Occupancy (nTracks) sampling for gun events."""
import numpy as np
import pytest
import yaml
from scipy import stats

from algorithms.generators.occupancy import OccupancyHistogram, parse_occupancy
from algorithms.common.particle_table import ConfigurationError
from framework.random import RandomStreams


def _write(tmp_path, **kw):
    d = {"variable": "nTracks", "definition": "long+upstream+downstream tracks (test)",
         "bin_edges": [0, 20, 40, 80, 160, 400], "counts": [10, 40, 30, 15, 5], "provenance": "unit test"}
    d.update(kw)
    path = tmp_path / "hist.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_parse():
    assert parse_occupancy("minbias") == ("minbias", None)
    assert parse_occupancy("fixed:120") == ("fixed", 120)
    for bad in ("fixed:", "fixed:-1", "fixed:abc", "poisson:3", ""):
        with pytest.raises(ConfigurationError, match="fixed:N"):
            parse_occupancy(bad)


def test_sampling_follows_histogram(tmp_path):
    h = OccupancyHistogram.from_file(_write(tmp_path))
    rnd = RandomStreams(1, 1, "occ")
    ev = np.arange(50000)
    u = rnd.uniform(ev, 0, stream=4, n=2)
    v = h.sample(u[:, 0], u[:, 1])
    assert v.dtype == np.int32 and v.min() >= 0 and v.max() <= 399
    counts, _ = np.histogram(v, h.edges)
    expected = h.counts / h.counts.sum() * v.size
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # uniform inside a bin: the integers of the 40-80 bin are equally populated
    inside = v[(v >= 40) & (v < 80)]
    assert stats.chisquare(np.bincount(inside - 40, minlength=40)).pvalue > 1e-3
    # deterministic per event
    u2 = rnd.uniform(ev[::-1], 0, stream=4, n=2)
    np.testing.assert_array_equal(h.sample(u2[:, 0], u2[:, 1])[::-1], v)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigurationError, match="fixed:N"):
        OccupancyHistogram.from_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigurationError, match="len"):
        OccupancyHistogram.from_file(_write(tmp_path, counts=[1, 2]))
    with pytest.raises(ConfigurationError, match="increasing"):
        OccupancyHistogram.from_file(_write(tmp_path, bin_edges=[0, 20, 10, 80, 160, 400]))
    with pytest.raises(ConfigurationError, match="nTracks"):
        OccupancyHistogram.from_file(_write(tmp_path, variable="nSPDHits"))
