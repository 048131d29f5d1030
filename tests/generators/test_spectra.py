"""Momentum spectra of the gun: flat p, flat pT, flat eta, and the parametrised b-hadron shape."""
import numpy as np
import pytest
from scipy import integrate, special, stats

from algorithms.generators.particle_gun import SpeciesGenerator
from algorithms.common.particle_table import ConfigurationError
from algorithms.generators.spectra import bhadron_pt_cdf, bhadron_pt_pdf

KEYS = np.array([5, 6, 7], dtype=np.uint64)
N = 20000


def _kin(spectrum, species="B+", **kw):
    g = SpeciesGenerator([species], charge_conjugates=False, spectrum=spectrum, **kw)
    r = g.generate(KEYS, np.arange(N))
    px, py, pz = r.px[:, 0], r.py[:, 0], r.pz[:, 0]
    pt = np.hypot(px, py)
    p = np.sqrt(pt ** 2 + pz ** 2)
    return p, pt, np.arcsinh(pz / pt), np.arctan2(py, px), r


def _chi2_flat(x, lo, hi, nbins=25):
    counts, _ = np.histogram(x, np.linspace(lo, hi, nbins + 1))
    assert counts.sum() == x.size  # nothing outside the range
    expected = x.size / nbins
    chi2 = ((counts - expected) ** 2 / expected).sum()
    return stats.chi2.sf(chi2, nbins - 1)


def test_flat_pt_flat_eta():
    p, pt, eta, phi, _ = _kin("FlatPt", pt_range=(500, 20000), eta_range=(2.0, 5.0))
    assert _chi2_flat(eta, 2.0, 5.0) > 1e-3
    assert _chi2_flat(phi, -np.pi, np.pi) > 1e-3
    assert stats.kstest(pt, "uniform", args=(500, 19500)).pvalue > 1e-3
    # the test has power: the same sample is not flat over a 10 % wider range
    counts, _ = np.histogram(eta, np.linspace(2.0, 5.3, 26))
    assert stats.chisquare(counts).pvalue < 1e-3


def test_flat_p():
    p, pt, eta, phi, r = _kin("FlatP", species="pi+", p_range=(2000, 100000), eta_range=(1.8, 5.5))
    assert stats.kstest(p, "uniform", args=(2000, 98000)).pvalue > 1e-3
    assert _chi2_flat(eta, 1.8, 5.5) > 1e-3
    np.testing.assert_allclose(r.E[:, 0], np.sqrt(p ** 2 + 139.57039 ** 2), rtol=1e-12)


def _y(pt, eta, m):
    return np.arcsinh(pt * np.sinh(eta) / np.sqrt(pt ** 2 + m ** 2))


def test_bhadron_spectrum_pt_and_eta():
    m = 5279.41
    pt_range, eta_range, sig = (0.0, 40000.0), (1.5, 6.0), 3.0
    p, pt, eta, phi, _ = _kin("BHadron", pt_range=pt_range, eta_range=eta_range)
    assert pt.min() >= 0 and pt.max() <= 40000 and eta.min() >= 1.5 and eta.max() <= 6.0

    # pT marginal: f(pT) * integral of exp(-y^2/2s^2) dy over [y(pT, eta_min), y(pT, eta_max)]
    def dens(x):
        return bhadron_pt_pdf(x) * (special.erf(_y(x, eta_range[1], m) / (np.sqrt(2) * sig))
                                    - special.erf(_y(x, eta_range[0], m) / (np.sqrt(2) * sig)))
    grid = np.linspace(*pt_range, 20001)
    cdf_grid = integrate.cumulative_trapezoid(dens(grid), grid, initial=0)
    cdf_grid /= cdf_grid[-1]
    assert stats.kstest(pt, lambda x: np.interp(x, grid, cdf_grid)).pvalue > 1e-3
    # the pure pT factor (ignoring the rapidity weight) is rejected: the test has power
    assert stats.kstest(pt, lambda x: bhadron_pt_cdf(x, *pt_range)).pvalue < 1e-3

    # eta marginal: integral over pT of f(pT) * beta * exp(-y^2/2s^2)
    pts = np.linspace(*pt_range, 4001)
    edges = np.linspace(*eta_range, 19)
    expected = []
    for a, b in zip(edges[:-1], edges[1:]):
        etas = np.linspace(a, b, 21)
        P, E = np.meshgrid(pts, etas, indexing="ij")
        mom = P * np.cosh(E)
        beta = mom / np.sqrt(mom ** 2 + m ** 2)
        w = bhadron_pt_pdf(P) * beta * np.exp(-0.5 * (_y(P, E, m) / sig) ** 2)
        expected.append(integrate.trapezoid(integrate.trapezoid(w, etas, axis=1), pts))
    expected = np.array(expected) / np.sum(expected) * N
    counts, _ = np.histogram(eta, edges)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(chi2, len(counts) - 1) > 1e-3, chi2
    # mean pT of a few GeV, falling rapidity distribution
    assert 3000 < pt.mean() < 7000
    assert (eta < 3).sum() > (eta > 4.5).sum()


def test_bad_spectrum_settings():
    with pytest.raises(ConfigurationError, match="Spectrum"):
        SpeciesGenerator(["pi+"], spectrum="Flat")
    with pytest.raises(ConfigurationError, match="eta range"):
        SpeciesGenerator(["pi+"], spectrum="FlatPt", eta_range=(5, 2))
    with pytest.raises(ConfigurationError, match="p_min > 0"):
        SpeciesGenerator(["pi+"], spectrum="FlatP", p_range=(0, 1000))
