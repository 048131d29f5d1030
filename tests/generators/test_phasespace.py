"""Phase-space decays: exact kinematics, Dalitz-plot uniformity, lifetimes, Breit-Wigner masses."""
import numpy as np
import pytest
from scipy import integrate, stats

from algorithms.generators.particle_gun import SignalGenerator
from algorithms.common.particle_table import default_table
from algorithms.generators.phasespace import C_LIGHT, decay_batch, pdk, truncated_bw_cdf

KEYS = np.array([11, 22, 33], dtype=np.uint64)
PV = dict(pv_mean=(0.8, -0.2, 0.0, 0.0), pv_sigma=(0.03, 0.03, 45.0, 0.15))

DESCRIPTORS = [
    "[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc",
    "[Lambda_b0 -> (Lambda_c+ -> p+ K- pi+) mu- anti-nu_mu]cc",
    "[B0 -> (K*(892)0 -> K+ pi-) gamma]cc",
    "[B0 -> (D- -> K+ pi- pi-) pi+ pi- pi+ ]cc",
    "[B_s0 -> (J/psi(1S) -> mu+ mu-) (phi(1020) -> K+ K-)]cc",
    "[B0 -> (J/psi(1S) -> e+ e-) (KS0 -> pi+ pi-)]cc",
]


def _gen(desc, n=5000, **kw):
    g = SignalGenerator(desc, **kw)
    return g, g.generate(KEYS, np.arange(n), **PV)


@pytest.mark.parametrize("desc", DESCRIPTORS)
def test_four_momentum_conservation_and_invariant_mass(desc):
    g, r = _gen(desc)
    t = g.tree
    p4 = np.stack([r.px, r.py, r.pz, r.E], axis=-1)  # [E, N, 4]
    # every particle on its mass shell (E = sqrt(p^2 + m^2); comparing sqrt(E^2 - p^2) with m
    # would only test float64 cancellation for light particles at high momentum)
    np.testing.assert_allclose(p4[..., 3], np.sqrt((p4[..., :3] ** 2).sum(-1) + r.mass ** 2), rtol=1e-12)
    for i in np.nonzero(t.n_daughters)[0]:
        f, k = t.first_daughter[i], t.n_daughters[i]
        s = p4[:, f:f + k].sum(axis=1)
        # 4-momentum conservation at the vertex, relative to the parent's energy
        assert np.max(np.abs(s - p4[:, i]) / p4[:, i, 3:4]) < 1e-6
        # invariant mass of the decay products = the parent's generated mass
        minv = np.sqrt(s[:, 3] ** 2 - (s[:, :3] ** 2).sum(-1))
        assert np.max(np.abs(minv / r.mass[:, i] - 1)) < 1e-6
        # daughters' masses fit in the parent's
        assert np.all(r.mass[:, f:f + k].sum(1) < r.mass[:, i])


def _dalitz_density(s, M, m1, m2, m3):
    """Projection of a flat Dalitz plot on s = m12^2: proportional to p2* p3* / sqrt(s)... in the
    (m12^2, m23^2) plane the m23^2 range has length 4 p2* p3* (momenta in the 12 rest frame)."""
    rs = np.sqrt(s)
    e2 = (s - m1 ** 2 + m2 ** 2) / (2 * rs)
    e3 = (M ** 2 - s - m3 ** 2) / (2 * rs)
    return 4 * np.sqrt(np.maximum(e2 ** 2 - m2 ** 2, 0)) * np.sqrt(np.maximum(e3 ** 2 - m3 ** 2, 0))


@pytest.mark.parametrize("masses", [(938.272, 493.677, 139.570), (139.57, 139.57, 139.57)])
def test_three_body_dalitz_plot_is_flat(masses):
    M = 2286.46
    n = 40000
    m1, m2, m3 = masses
    p = decay_batch(7, np.arange(n), np.zeros(n), np.full(n, M), np.zeros((n, 3)), masses)
    np.testing.assert_allclose(p.sum(1), np.tile([0, 0, 0, M], (n, 1)), atol=1e-6 * M)
    s12 = ((p[:, 0] + p[:, 1])[:, 3] ** 2 - ((p[:, 0] + p[:, 1])[:, :3] ** 2).sum(-1))
    lo, hi = (m1 + m2) ** 2, (M - m3) ** 2
    edges = np.linspace(lo, hi, 31)
    counts, _ = np.histogram(s12, edges)
    norm = integrate.quad(_dalitz_density, lo, hi, args=(M, m1, m2, m3))[0]
    expected = n * np.array([integrate.quad(_dalitz_density, a, b, args=(M, m1, m2, m3))[0]
                             for a, b in zip(edges[:-1], edges[1:])]) / norm
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(chi2, len(counts) - 1) > 1e-3, chi2


def test_two_body_decay_is_isotropic_and_momentum_exact():
    n = 20000
    M, ma, mb = 5279.41, 3096.9, 493.677
    p = decay_batch(3, np.arange(n), np.zeros(n), np.full(n, M), np.zeros((n, 3)), [ma, mb])
    pa = np.sqrt((p[:, 0, :3] ** 2).sum(-1))
    np.testing.assert_allclose(pa, pdk(M, ma, mb), rtol=1e-9)
    cos = p[:, 0, 2] / pa
    phi = np.arctan2(p[:, 0, 1], p[:, 0, 0])
    assert stats.kstest(cos, "uniform", args=(-1, 2)).pvalue > 1e-3
    assert stats.kstest(phi, "uniform", args=(-np.pi, 2 * np.pi)).pvalue > 1e-3


def test_many_body_decay_conserves_momentum():
    n = 2000
    masses = [139.57] * 4 + [493.677]
    p = decay_batch(5, np.arange(n), np.zeros(n), np.full(n, 5279.0), np.tile([1e3, -2e3, 8e4], (n, 1)), masses)
    e_parent = np.sqrt(5279.0 ** 2 + 1e6 + 4e6 + 6.4e9)
    np.testing.assert_allclose(p.sum(1), np.tile([1e3, -2e3, 8e4, e_parent], (n, 1)), rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("desc,node", [("[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc", 0),
                                       ("[Lambda_b0 -> (Lambda_c+ -> p+ K- pi+) mu- anti-nu_mu]cc", 1),
                                       ("[B0 -> (J/psi(1S) -> mu+ mu-) (KS0 -> pi+ pi-)]cc", 2)])
def test_decay_time_fit_gives_pdg_lifetime(desc, node):
    g, r = _gen(desc, n=20000, spectrum="FlatPt", pt_range=(0, 20000), eta_range=(2, 5))
    t = g.tree
    k = g.end_vertex[node]
    ct = r.ct[:, k]
    # unbinned maximum likelihood of an exponential: ctau_hat = mean, sigma = ctau_hat / sqrt(N)
    tau_hat = ct.mean()
    sigma = tau_hat / np.sqrt(ct.size)
    ctau_pdg = default_table().ctau([t.pid[node]])[0]
    assert abs(tau_hat - ctau_pdg) / sigma < 3, (tau_hat, ctau_pdg, sigma)
    # and the shape: KS against the exponential
    assert stats.kstest(ct, "expon", args=(0, ctau_pdg)).pvalue > 1e-3
    # lab-frame flight = beta*gamma*c*t along the momentum; time = gamma * t
    o = g.origin_vertex[node]
    d = np.stack([r.vx[:, k] - r.vx[:, o], r.vy[:, k] - r.vy[:, o], r.vz[:, k] - r.vz[:, o]], 1)
    p = np.stack([r.px[:, node], r.py[:, node], r.pz[:, node]], 1)
    np.testing.assert_allclose(d, p / r.mass[:, node:node + 1] * ct[:, None], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r.vt[:, k] - r.vt[:, o], r.E[:, node] / r.mass[:, node] * ct / C_LIGHT,
                               rtol=1e-9, atol=1e-15)


def test_kstar_breit_wigner_mass():
    g, r = _gen("[B0 -> (K*(892)0 -> K+ pi-) gamma]cc", n=20000)
    t = g.tree
    m = r.mass[:, 1]
    assert np.all((m >= t.mlo[1]) & (m <= t.mhi[1]))
    cdf = lambda x: truncated_bw_cdf(x, t.mass[1], t.width[1], t.mlo[1], t.mhi[1])  # noqa: E731
    assert stats.kstest(m, cdf).pvalue > 1e-3
    # a plain (untruncated-width) comparison must fail: the test has power
    assert stats.kstest(m, lambda x: truncated_bw_cdf(x, t.mass[1], 0.7 * t.width[1], t.mlo[1], t.mhi[1])).pvalue < 1e-3
    # the stable daughters keep their PDG masses
    assert np.all(r.mass[:, 3] == t.mass[3]) and np.all(r.mass[:, 2] == 0.0)


def test_narrow_particles_have_fixed_mass():
    g, r = _gen("[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc", n=2000)
    assert np.all(r.mass[:, 0] == g.tree.mass[0])
    jpsi = r.mass[:, 1]
    assert np.all(np.abs(jpsi - 3096.9) <= 5 * 0.0926 + 1e-9) and jpsi.std() > 0.01
