"""PV reconstruction: triple-Gaussian smearing with per-vertex covariance of the drawn component."""
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from framework import Collection, ConfigurationError
from framework.context import BatchContext
from framework.validation import pull_widths
from algorithms.tracking.pv import PVReconstruction, parse_pv_smearing, smear_vertices

try:  # the conditions preset (the table the production uses)
    from algorithms.conditions import PRESETS

    TABLE = PRESETS["2016-MagUp-13TeV"]["values"]["pv_smearing"]
except (ImportError, KeyError):  # 2016 MagUp table of LHCb's Lamarr (lamarr.md section 4, LHCBGAUSS-1287)
    TABLE = {
        "x": {"mu": 0.000015, "f1": 0.39575, "f2": 0.13945, "s1": 0.02246, "s2": 0.04501, "s3": 0.01176},
        "y": {"mu": -0.000054, "f1": 0.39621, "f2": 0.13293, "s1": 0.02129, "s2": 0.04236, "s3": 0.01130},
        "z": {"mu": 0.000230, "f1": 0.03295, "f2": 0.73535, "s1": 0.42375, "s2": 0.07201, "s3": 0.17024},
    }


def make_alg(table=TABLE):
    alg = PVReconstruction("PVReco")
    alg._app = SimpleNamespace(conditions={"pv_smearing": table}, msg_svc=None)
    alg.initialize()
    return alg


def run_alg(alg, n_events, n_per_event=3, first_event=0, seed=1):
    counts = np.full(n_events, n_per_event)
    n = counts.sum()
    rng = np.random.default_rng(7)
    truth = {"x": rng.normal(0.83, 0.03, n), "y": rng.normal(-0.17, 0.025, n), "z": rng.normal(0, 45, n),
             "t": np.zeros(n), "collision": np.tile(np.arange(n_per_event, dtype=np.int32), n_events)}
    coll = Collection.from_counts(truth, counts)
    ctx = BatchContext(np.arange(first_event, first_event + n_events), run_number=1, seed=seed).for_algorithm(alg.name)
    return coll, alg.execute(ctx, Collisions=coll)


def test_pv_pulls_are_unit_normal_and_mixture_fractions():
    alg = make_alg()
    coll, pv = run_alg(alg, 20_000)
    assert pv.n_events == 20_000 and len(pv) == 60_000
    table = parse_pv_smearing(TABLE)
    for i, c in enumerate("xyz"):
        sigma = np.sqrt(pv["cov"][:, i, i])
        pull = (pv[c] - coll[c] - table.mu[i]) / sigma
        w = pull_widths(pull)
        assert abs(np.mean(pull)) < 3 / np.sqrt(len(pull)), c
        assert abs(np.std(pull) - 1) < 0.03, c
        assert abs(w.core_width - 1) < 0.03, c
        # the drawn components follow the table's fractions (chi2 test of the multinomial counts)
        comp = np.argmin(np.abs(sigma[:, None] - table.sigmas[i][None, :]), axis=1)
        obs = np.bincount(comp, minlength=3)
        exp = table.fractions()[i] * len(comp)
        chi2 = ((obs - exp) ** 2 / exp).sum()
        assert stats.chi2.sf(chi2, 2) > 1e-3, (c, obs, exp)
        # each component is Gaussian with its own width
        for k in range(3):
            r = stats.kstest(pull[comp == k], "norm")
            assert r.pvalue > 1e-3, (c, k, r)
    # off-diagonal covariance is zero, collision link kept
    assert np.all(pv["cov"][:, 0, 1] == 0)
    np.testing.assert_array_equal(pv["collision"], coll["collision"])


def test_pv_reproducible_independent_of_batching():
    alg = make_alg()
    t_full, full = run_alg(alg, 10)
    t_second, second = run_alg(alg, 5, first_event=5)
    # the smearing of event 5..9 does not depend on the batch it is processed in
    np.testing.assert_allclose((full["x"] - t_full["x"])[15:], second["x"] - t_second["x"], rtol=0, atol=1e-12)
    np.testing.assert_allclose((full["z"] - t_full["z"])[15:], second["z"] - t_second["z"], rtol=0, atol=1e-12)
    t_other, other_seed = run_alg(alg, 10, seed=2)
    assert not np.array_equal(full["x"] - t_full["x"], other_seed["x"] - t_other["x"])


def test_smear_vertices_component_choice():
    table = parse_pv_smearing(TABLE)
    u = np.array([[0.1, 0.1, 0.01], [0.45, 0.45, 0.5], [0.99, 0.99, 0.99]])
    reco, sigma, comp = smear_vertices(np.zeros((3, 3)), u, np.zeros((3, 3)), table)
    np.testing.assert_array_equal(comp, [[0, 0, 0], [1, 1, 1], [2, 2, 2]])
    np.testing.assert_allclose(reco, np.broadcast_to(table.mu, (3, 3)))
    assert sigma[2, 2] == pytest.approx(0.17024)


def test_bad_table_raises():
    bad = {k: dict(v) for k, v in TABLE.items()}
    bad["z"]["f1"] = 0.5  # f1 + f2 > 1
    with pytest.raises(ConfigurationError, match="fractions"):
        make_alg(bad)
    bad = {k: dict(v) for k, v in TABLE.items()}
    del bad["y"]["s2"]
    bad["y"]["s_2"] = 0.04
    with pytest.raises(ConfigurationError, match="did you mean"):
        make_alg(bad)
    alg = PVReconstruction("PVReco")
    alg._app = SimpleNamespace(conditions={}, msg_svc=None)
    with pytest.raises(ConfigurationError, match="pv_smearing"):
        alg.initialize()
