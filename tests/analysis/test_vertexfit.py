"""Statistical tests of the batched vertex fit on Gaussian toys (B+ -> J/psi(mu mu) K+)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toys  # noqa: E402

from algorithms.analysis.kinematics import ConfigurationError, composite_measurement  # noqa: E402
from algorithms.analysis.vertexfit import (  # noqa: E402
    NONCONVERGED,
    BADINPUT,
    SUCCESS,
    doca,
    fit_vertex,
    fit_vertex_general,
    fit_vertex_ragged,
    track_inputs,
)

N_TOYS = 20_000


@pytest.fixture(scope="module")
def T():
    return toys.generate(N_TOYS, seed=2024)


def _check_pulls(pull, label):
    mu, sd = pull.mean(0), pull.std(0)
    assert np.all(np.abs(mu) < 0.03), f"{label}: pull means {mu}"
    assert np.all(np.abs(sd - 1) < 0.03), f"{label}: pull widths {sd}"


def _check_chi2(chi2, ndof, label):
    p = stats.chi2.sf(chi2, ndof)
    ks = stats.kstest(p, "uniform").pvalue
    assert ks > 0.01, f"{label}: chi2 probability not flat (KS p = {ks:.3g}, <chi2> = {chi2.mean():.3f}, ndof {ndof})"


def _vertex_pulls(r, true):
    return (r["vertex"] - true) / np.sqrt(np.diagonal(r["vertex_cov"], 0, 1, 2))


@pytest.mark.parametrize("ntrk", [2, 3])
def test_track_vertex_pulls_and_chi2(T, ntrk):
    r = fit_vertex(T["states"][:, :ntrk], T["covs"][:, :ntrk], T["z"][:, :ntrk], T["masses"][:ntrk])
    assert np.all(r["status"] == SUCCESS)
    assert np.all(r["ndof"] == 2 * ntrk - 3)
    _check_pulls(_vertex_pulls(r, T["true_sv"]), f"{ntrk}-track vertex")
    _check_chi2(r["chi2"], 2 * ntrk - 3, f"{ntrk}-track vertex")
    true_p4 = T["p4_Jpsi"] if ntrk == 2 else T["p4_B"]
    _check_pulls((r["p4"] - true_p4) / np.sqrt(np.diagonal(r["cov7"], 0, 1, 2)[:, 3:]), f"{ntrk}-track p4")
    if ntrk == 3:
        mp = (r["mass"] - toys.M_B) / r["mass_err"]
        _check_pulls(mp[:, None], "B mass")
    # covariance is symmetric positive definite
    assert np.all(np.linalg.eigvalsh(r["cov7"][:200]) > 0)
    assert r["daughter_p4"].shape == (N_TOYS, ntrk, 4)


def test_resonance_composite_equals_track_fit(T):
    """B vertex from (J/psi composite as a resonance) + K+ = the 3-track vertex (linear limit)."""
    rj = fit_vertex(T["states"][:, :2], T["covs"][:, :2], T["z"][:, :2], T["masses"][:2])
    r3 = fit_vertex(T["states"], T["covs"], T["z"], T["masses"])
    n = N_TOYS
    for kind, ndof in (("resonance", 2), ("flying", 1)):
        meas, cov, z, k = composite_measurement(rj["vertex"], rj["p4"], rj["cov7"], kind)
        km, kc = track_inputs(T["states"][:, 2], T["covs"][:, 2])
        rb = fit_vertex_general(np.stack([meas, km], 1).reshape(-1, 7), np.stack([cov, kc], 1).reshape(-1, 7, 7),
                                np.stack([z, T["z"][:, 2]], 1).reshape(-1),
                                np.stack([k, np.zeros(n, np.int8)], 1).reshape(-1),
                                np.stack([np.zeros(n), np.full(n, toys.M_K)], 1).reshape(-1), np.arange(n + 1) * 2)
        # near-parallel J/psi and K+ leave z weakly determined: Gauss-Newton may still be creeping at
        # the iteration limit for a rare toy (reported NONCONVERGED, kept by the combiner)
        assert np.all(rb["status"] <= NONCONVERGED) and np.mean(rb["status"] == SUCCESS) > 0.999
        assert np.all(rb["ndof"] == ndof)
        _check_pulls(_vertex_pulls(rb, T["true_sv"]), f"{kind} composite vertex")
        _check_chi2(rb["chi2"], ndof, f"{kind} composite vertex")
        _check_pulls((rb["mass"] - toys.M_B)[:, None] / rb["mass_err"][:, None], f"{kind} B mass")
        if kind == "resonance":
            d = (rb["vertex"] - r3["vertex"]) / np.sqrt(np.diagonal(r3["vertex_cov"], 0, 1, 2))
            assert np.median(np.abs(d)) < 0.01
            assert np.median(np.abs(rb["chi2"] + rj["chi2"] - r3["chi2"])) < 0.01


def test_boosted_resonance_composite_mass_matches_track_fit():
    """Above ~150 GeV the composite's energy and momentum are almost fully correlated: the B mass of
    the (J/psi composite + K) fit must still equal the 3-track fit's (the composite carries its
    invariant mass, not its energy, so nothing near-singular enters the fit)."""
    B = toys.generate(3000, seed=77)
    pB = np.linalg.norm(B["p4_B"][:, :3], axis=1)
    sel = pB > 1.5e5
    assert sel.sum() > 100
    S = {k: B[k][sel] for k in ("states", "covs", "z")}
    n = int(sel.sum())
    rj = fit_vertex(S["states"][:, :2], S["covs"][:, :2], S["z"][:, :2], B["masses"][:2])
    r3 = fit_vertex(S["states"], S["covs"], S["z"], B["masses"])
    meas, cov, z, k = composite_measurement(rj["vertex"], rj["p4"], rj["cov7"], "resonance")
    km, kc = track_inputs(S["states"][:, 2], S["covs"][:, 2])
    rb = fit_vertex_general(np.stack([meas, km], 1).reshape(-1, 7), np.stack([cov, kc], 1).reshape(-1, 7, 7),
                            np.stack([z, S["z"][:, 2]], 1).reshape(-1), np.stack([k, np.zeros(n, np.int8)], 1).reshape(-1),
                            np.stack([np.zeros(n), np.full(n, toys.M_K)], 1).reshape(-1), np.arange(n + 1) * 2)
    ok = (rb["status"] <= NONCONVERGED) & (r3["status"] <= NONCONVERGED)
    assert ok.mean() > 0.99
    d = (rb["mass"] - r3["mass"])[ok] / r3["mass_err"][ok]
    assert np.all(rb["mass"][ok] > 0)
    assert np.quantile(np.abs(d), 0.99) < 0.05, np.quantile(np.abs(d), [0.5, 0.9, 0.99])


def test_ragged_matches_fixed(T):
    n = 500
    r3 = fit_vertex(T["states"][:n], T["covs"][:n], T["z"][:n], T["masses"])
    r2 = fit_vertex(T["states"][:n, :2], T["covs"][:n, :2], T["z"][:n, :2], T["masses"][:2])
    # alternate 3-track and 2-track candidates in one ragged call
    S, C, Z, M, off = [], [], [], [], [0]
    for i in range(n):
        k = 3 if i % 2 == 0 else 2
        S.append(T["states"][i, :k]), C.append(T["covs"][i, :k]), Z.append(T["z"][i, :k]), M.append(T["masses"][:k])
        off.append(off[-1] + k)
    rr = fit_vertex_ragged(np.concatenate(S), np.concatenate(C), np.concatenate(Z), np.concatenate(M), np.array(off))
    even, odd = np.arange(0, n, 2), np.arange(1, n, 2)
    np.testing.assert_allclose(rr["vertex"][even], r3["vertex"][even], rtol=0, atol=1e-9)
    np.testing.assert_allclose(rr["vertex"][odd], r2["vertex"][odd], rtol=0, atol=1e-9)
    np.testing.assert_allclose(rr["chi2"][odd], r2["chi2"][odd], rtol=1e-9, atol=1e-9)
    assert list(rr["ndof"][:4]) == [3, 1, 3, 1]


def test_bad_inputs_flagged_not_nan_in_good_rows(T):
    S = T["states"][:10].copy()
    C = T["covs"][:10].copy()
    S[1, 0, 0] = np.nan
    S[2, 1, 4] = 0.0
    C[3, 2, 0, 0] = -1.0
    r = fit_vertex(S, C, T["z"][:10], T["masses"])
    assert list(r["status"][1:4]) == [BADINPUT] * 3
    good = r["status"] == SUCCESS
    assert good.sum() == 7
    for key in ("vertex", "vertex_cov", "chi2", "p4", "cov7", "mass", "mass_err"):
        assert np.all(np.isfinite(r[key][good])), key
    assert r["n_failed"] == 3
    with pytest.raises(ConfigurationError):
        fit_vertex_general(np.zeros((2, 7)), np.zeros((2, 7, 7)), np.zeros(2), np.array([0, 5]), 0.0, np.array([0, 2]))


def test_doca(T):
    s1, s2 = T["states"][:, 0], T["states"][:, 1]
    d, chi2 = doca(s1, T["z"][:, 0], s2, T["z"][:, 1], T["covs"][:, 0], T["covs"][:, 1])
    # both muons come from one point: DOCA^2/sigma^2 is chi2(1) distributed
    _check_chi2(chi2, 1, "DOCA chi2")
    dtrue = doca(T["true_states"][:, 0], T["z"][:, 0], T["true_states"][:, 1], T["z"][:, 1])
    assert np.all(dtrue < 1e-9)
    # geometry: two lines 1 mm apart in y
    a = np.array([[0.0, 0.0, 0.1, 0.0, 1e-4]])
    b = np.array([[0.0, 1.0, -0.1, 0.0, 1e-4]])
    assert abs(doca(a, 0.0, b, 5.0)[0] - 1.0) < 1e-12
    # 2-track vertex chi2 equals the DOCA chi2 to first order
    r = fit_vertex(T["states"][:2000, :2], T["covs"][:2000, :2], T["z"][:2000, :2], T["masses"][:2])
    assert np.median(np.abs(r["chi2"] - chi2[:2000]) / (1 + chi2[:2000])) < 0.02


def test_kinematics_helpers(T):
    from algorithms.analysis.kinematics import masses_for, p4_mass, track_p4, track_p4_cov

    s, c = T["states"][:50, 2], T["covs"][:50, 2]
    p4 = track_p4(s, toys.M_K)
    np.testing.assert_allclose(p4_mass(p4), toys.M_K, rtol=1e-9)
    # numerical Jacobian check of the 4x4 covariance
    C4 = track_p4_cov(s, c, toys.M_K)
    J = np.zeros((50, 4, 5))
    for k in range(5):
        h = 1e-7 * max(1e-3, np.abs(s[:, k]).mean()) if k != 4 else 1e-6 * np.abs(s[:, 4]).mean()
        d = np.zeros(5)
        d[k] = h
        J[:, :, k] = (track_p4(s + d, toys.M_K) - track_p4(s - d, toys.M_K)) / (2 * h)
    np.testing.assert_allclose(C4, J @ c @ np.swapaxes(J, 1, 2), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(masses_for([13, -321, 443]), [toys.M_MU, toys.M_K, toys.M_JPSI])
