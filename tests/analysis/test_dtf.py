"""Statistical tests of the DecayTreeFitter kernel on Gaussian toys B+ -> J/psi(mu mu) K+."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toys  # noqa: E402

from algorithms.analysis.dtf import (  # noqa: E402
    BADINPUT,
    FLAG_DOWNSTREAM,
    SUCCESS,
    DTFConfig,
    compile_tree,
    fit_batch,
    fit_configs,
)
from algorithms.analysis.kinematics import ConfigurationError, pdg_mass  # noqa: E402

N_TOYS = 20_000
DESC = "B+ -> (J/psi(1S) -> mu+ mu-) K+"
CONFIGS = {
    "DTF": DTFConfig("DTF"),
    "DTF_PV": DTFConfig("DTF_PV", pv_constraint=True),
    "DTF_PV_JpsiM": DTFConfig("DTF_PV_JpsiM", pv_constraint=True, mass_constraints=("J/psi(1S)",)),
}
NDOF = {"DTF": 3, "DTF_PV": 5, "DTF_PV_JpsiM": 6}


@pytest.fixture(scope="module")
def T():
    return toys.generate(N_TOYS, seed=99)


@pytest.fixture(scope="module")
def spec():
    return compile_tree(DESC)


@pytest.fixture(scope="module")
def results(T, spec):
    return {name: fit_batch(spec, cfg, T["states"], T["covs"], T["z"], None, T["pv"], T["pv_cov"])
            for name, cfg in CONFIGS.items()}


def _pull_ok(pull, label):
    mu, sd = float(np.mean(pull)), float(np.std(pull))
    assert abs(mu) < 0.03, f"{label}: pull mean {mu:.4f}"
    assert abs(sd - 1) < 0.03, f"{label}: pull width {sd:.4f}"


def test_spec(spec):
    assert spec.labels == ["muplus", "muminus", "Jpsi", "Kplus", "Bplus"]
    assert list(spec.track_nodes) == [0, 1, 3]
    assert spec.long_lived.tolist() == [False, False, False, False, True]
    assert spec.find("J/psi(1S)") == [2] and spec.find("Jpsi") == [2]
    with pytest.raises(ConfigurationError, match="did you mean"):
        spec.find("Jpsii")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_status_ndof_chi2(results, name):
    r = results[name]
    assert np.mean(r["status"] == SUCCESS) > 0.999, np.bincount(r["status"])
    assert np.all(r["nDOF"] == NDOF[name])
    g = r["status"] == SUCCESS
    p = stats.chi2.sf(r["chi2"][g], NDOF[name])
    ks = stats.kstest(p, "uniform").pvalue
    assert ks > 0.01, f"{name}: chi2 probability not flat, KS p = {ks:.3g}, <chi2> = {r['chi2'][g].mean():.3f}"
    for key, arr in r.items():
        if isinstance(arr, np.ndarray) and arr.dtype.kind == "f" and arr.shape[0] == N_TOYS:
            assert np.all(np.isfinite(arr[g])), f"{name}: NaN in good rows of {key}"
    assert r["niter"][g].mean() < 4


@pytest.mark.parametrize("name", list(CONFIGS))
def test_pulls(T, results, name):
    r = results[name]
    g = r["status"] == SUCCESS
    for a, ax in enumerate("XYZ"):
        _pull_ok(((r[f"ENDVERTEX_{ax}"] - T["true_sv"][:, a]) / r[f"ENDVERTEX_{ax}ERR"])[g], f"{name} vertex {ax}")
    ptrue = np.linalg.norm(T["p4_B"][:, :3], axis=1)
    _pull_ok(((r["P"] - ptrue) / r["PERR"])[g], f"{name} P")
    _pull_ok(((r["M"] - toys.M_B) / r["MERR"])[g], f"{name} M")
    if name != "DTF":  # with the PV constraint: decay length and ctau are fit parameters
        _pull_ok(((r["ctau"] - T["true_ctau"]) / r["ctauErr"])[g], f"{name} ctau")
        _pull_ok(((r["decayLength"] - T["true_L"]) / r["decayLengthErr"])[g], f"{name} decay length")


def test_mass_constraint_and_resolution(results):
    r0, r1 = results["DTF_PV"], results["DTF_PV_JpsiM"]
    g = (r0["status"] == SUCCESS) & (r1["status"] == SUCCESS)
    assert np.max(np.abs(r1["Jpsi_M"][g] - pdg_mass(443))) < 1e-6
    assert np.all(r1["Jpsi_MERR"][g] == 0)
    res0, res1 = np.std(r0["M"][g] - toys.M_B), np.std(r1["M"][g] - toys.M_B)
    assert res1 < 0.75 * res0, (res0, res1)
    assert np.median(r1["MERR"][g]) < 0.75 * np.median(r0["MERR"][g])
    # without the constraint the J/psi mass is free and has its own resolution
    assert np.std(r0["Jpsi_M"][g] - pdg_mass(443)) > 5.0


def test_decay_length_without_pv_constraint(T, results):
    """Without pointing the decay length is the projection of (x_B - x_PV) on the momentum; it agrees
    with the PV-constrained one; its error neglects the direction uncertainty (pull width ~1.05)."""
    r0, r1 = results["DTF"], results["DTF_PV"]
    g = (r0["status"] == 0) & (r1["status"] == 0)
    d = (r0["decayLength"] - r1["decayLength"]) / r1["decayLengthErr"]
    assert np.median(np.abs(d[g])) < 0.1
    pull = ((r0["decayLength"] - T["true_L"]) / r0["decayLengthErr"])[g]
    assert abs(np.mean(pull)) < 0.03 and 0.97 < np.std(pull) < 1.10
    assert np.all(np.isfinite(r1["PV_Z"][g]))


def test_daughter_order_and_reference_z_invariance(T, results):
    n = 2000
    r = results["DTF_PV_JpsiM"]
    spec2 = compile_tree("B+ -> K+ (J/psi(1S) -> mu- mu+)")
    perm = [2, 1, 0]  # K+, mu-, mu+
    S, C, Z = T["states"][:n, perm], T["covs"][:n, perm], T["z"][:n, perm].copy()
    # move every reference point by +-30 mm along the straight line (exact for straight lines)
    dz = np.where(np.arange(3) % 2 == 0, 30.0, -30.0)[None, :] * np.ones((n, 1))
    J = np.tile(np.eye(5), (n, 3, 1, 1))
    J[..., 0, 2] = dz
    J[..., 1, 3] = dz
    S = np.einsum("ntab,ntb->nta", J, S)
    C = J @ C @ np.swapaxes(J, -1, -2)
    r2 = fit_batch(spec2, CONFIGS["DTF_PV_JpsiM"], S, C, Z + dz, None, T["pv"][:n], T["pv_cov"][:n])
    assert np.all(r2["status"] == SUCCESS)
    np.testing.assert_allclose(r2["chi2"], r["chi2"][:n], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r2["M"], r["M"][:n], rtol=0, atol=1e-5)
    np.testing.assert_allclose(r2["ctau"], r["ctau"][:n], rtol=0, atol=1e-8)
    np.testing.assert_allclose(r2["Kplus_PX"], r["Kplus_PX"][:n], rtol=1e-8)


def test_long_lived_intermediate(T):
    """Declare the J/psi long-lived: an extra decay length (true value 0) with its own pointing."""
    spec = compile_tree(DESC, long_lived=("J/psi(1S)",))
    r = fit_batch(spec, DTFConfig("LL", pv_constraint=True), T["states"], T["covs"], T["z"], None, T["pv"],
                  T["pv_cov"])
    g = r["status"] == SUCCESS
    assert g.mean() > 0.999
    assert np.all(r["nDOF"] == 4)
    _pull_ok((r["Jpsi_decayLength"] / r["Jpsi_decayLengthErr"])[g], "J/psi flight (true 0)")
    ks = stats.kstest(stats.chi2.sf(r["chi2"][g], 4), "uniform").pvalue
    assert ks > 0.01
    _pull_ok(((r["ctau"] - T["true_ctau"]) / r["ctauErr"])[g], "B ctau with a flying J/psi")


def test_substitution_and_configs(T, spec):
    n = 3000
    cfgs = [CONFIGS["DTF_PV_JpsiM"], DTFConfig("DTF_PV_JpsiM_Kpi", pv_constraint=True,
                                                mass_constraints=("Jpsi",), substitutions=("K+ -> pi+",))]
    flat = fit_configs(spec, cfgs, T["states"][:n], T["covs"][:n], T["z"][:n], None, T["pv"][:n], T["pv_cov"][:n])
    assert "DTF_PV_JpsiM_Kpi_M" in flat and "DTF_PV_JpsiM_M" in flat
    assert flat["DTF_PV_JpsiM_Kpi_n_failed"] == 0
    # pi mass hypothesis: E_K -> E_pi, the B mass moves down
    assert np.all(flat["DTF_PV_JpsiM_Kpi_M"] < flat["DTF_PV_JpsiM_M"])
    mk = flat["DTF_PV_JpsiM_Kpi_Kplus_M"]
    np.testing.assert_allclose(mk, pdg_mass(211), atol=1e-4)
    # charge-conjugate substitution via the same string: spec written for B-
    spec_cc = compile_tree("B- -> (J/psi(1S) -> mu- mu+) K-")
    r = fit_batch(spec_cc, cfgs[1], T["states"][:n], T["covs"][:n], T["z"][:n], None, T["pv"][:n], T["pv_cov"][:n])
    np.testing.assert_allclose(r["Kminus_M"], pdg_mass(211), atol=1e-4)
    with pytest.raises(ConfigurationError):
        fit_configs(spec, [cfgs[0], cfgs[0]], T["states"][:5], T["covs"][:5], T["z"][:5])


def test_bad_input_and_flags(T, spec):
    n = 20
    S = T["states"][:n].copy()
    S[3, 1, 2] = np.nan
    S[5, 0, 4] = 0.0
    ds = np.zeros((n, 3), bool)
    ds[7, 2] = True
    r = fit_batch(spec, CONFIGS["DTF_PV_JpsiM"], S, T["covs"][:n], T["z"][:n], None, T["pv"][:n], T["pv_cov"][:n],
                  downstream=ds)
    assert r["status"][3] == BADINPUT and r["status"][5] == BADINPUT
    assert r["n_badinput"] == 2
    assert r["flags"][7] == FLAG_DOWNSTREAM and r["flags"][6] == 0
    g = r["status"] == SUCCESS
    assert g.sum() == n - 2
    assert np.all(np.isfinite(r["M"][g]))


def test_configuration_errors(spec, T):
    with pytest.raises(ConfigurationError, match="did you mean"):
        fit_batch(spec, DTFConfig("x", mass_constraints=("J/psi(2S)x",)), T["states"][:2], T["covs"][:2], T["z"][:2])
    with pytest.raises(ConfigurationError, match="needs pv"):
        fit_batch(spec, DTFConfig("x", pv_constraint=True), T["states"][:2], T["covs"][:2], T["z"][:2])
    with pytest.raises(ConfigurationError, match="not a composite"):
        fit_batch(spec, DTFConfig("x", mass_constraints=("K+",)), T["states"][:2], T["covs"][:2], T["z"][:2])
    with pytest.raises(ConfigurationError, match=r"\(N, 3, 5\)"):
        fit_batch(spec, DTFConfig("x"), T["states"][:2, :2], T["covs"][:2], T["z"][:2])
    # partially reconstructed: neutrino left out, no PV pointing allowed, vertex of the head free
    lb = compile_tree("Lambda_b0 -> (Lambda_c+ -> p+ K- pi+) mu- anti-nu_mu")
    assert lb.kind.tolist().count(2) == 1 and lb.has_missing[lb.head]
    with pytest.raises(ConfigurationError, match="partially reconstructed"):
        fit_batch(lb, DTFConfig("x", pv_constraint=True), np.zeros((1, 4, 5)), np.zeros((1, 4, 5, 5)),
                  np.zeros((1, 4)), None, np.zeros((1, 3)), np.zeros((1, 3, 3)))
    with pytest.raises(ConfigurationError, match="missing daughter"):
        fit_batch(lb, DTFConfig("x", mass_constraints=("Lambda_b0",)), np.zeros((1, 4, 5)),
                  np.zeros((1, 4, 5, 5)), np.zeros((1, 4)))
