"""Closest-to-beam propagation, model feature layout, covariance assembly and the PD construction
(no shared data needed)."""
import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from algorithms.tracking.ctb import (COVARIANCE_INPUTS, COVARIANCE_OUTPUTS, CORR_PAIRS, RESOLUTION_INPUTS,
                                     closest_to_beam, covariance_features, covariance_from_outputs,
                                     physical_charge, resolution_features, resolution_features_from_momentum)


def _dist2(z, x0, y0, z0, tx, ty):
    return (x0 + tx * (z - z0)) ** 2 + (y0 + ty * (z - z0)) ** 2


def test_ctb_matches_brute_force_minimisation():
    rng = np.random.default_rng(11)
    n = 300
    x0, y0 = rng.normal(0.8, 2.0, n), rng.normal(-0.2, 2.0, n)
    z0 = rng.normal(0, 100, n)
    scale = 10.0 ** rng.uniform(-4, 0, n)  # slopes from 1e-4 to 1
    tx, ty = rng.normal(0, 1, n) * scale, rng.normal(0, 1, n) * scale
    x, y, z = closest_to_beam(x0, y0, z0, tx, ty)
    for i in range(n):
        # brute force: coarse grid over a huge range, then bounded scalar minimisation
        half = 10.0 * (abs(x0[i]) + abs(y0[i]) + 1) / max(np.hypot(tx[i], ty[i]), 1e-12)
        grid = np.linspace(z0[i] - half, z0[i] + half, 20001)
        k = np.argmin(_dist2(grid, x0[i], y0[i], z0[i], tx[i], ty[i]))
        step = grid[1] - grid[0]
        res = minimize_scalar(_dist2, bounds=(grid[k] - step, grid[k] + step), method="bounded",
                              args=(x0[i], y0[i], z0[i], tx[i], ty[i]), options={"xatol": 1e-10 * half})
        d_brute = _dist2(res.x, x0[i], y0[i], z0[i], tx[i], ty[i])
        d_ours = _dist2(z[i], x0[i], y0[i], z0[i], tx[i], ty[i])
        assert d_ours <= d_brute * (1 + 1e-6) + 1e-12
        assert z[i] == pytest.approx(res.x, abs=max(1e-6 * half, 1e-6))
    # the CTB point is on the line, and its transverse position is perpendicular to the direction
    np.testing.assert_allclose(x, x0 + tx * (z - z0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x * tx + y * ty, 0, atol=1e-9 * (np.abs(x) + np.abs(y)).max())


def test_ctb_formula_of_the_readme():
    rng = np.random.default_rng(2)
    x0, y0, z0 = rng.normal(size=(3, 1000))
    tx, ty = rng.normal(0, 0.2, (2, 1000))
    _, _, z = closest_to_beam(x0, y0, z0, tx, ty)
    ref = (tx**2 * z0 - tx * x0 + ty**2 * z0 - ty * y0) / (tx**2 + ty**2)
    np.testing.assert_allclose(z, ref, rtol=1e-12)


def test_ctb_parallel_to_beam_keeps_origin():
    x, y, z = closest_to_beam([0.8, 0.1], [-0.2, 0.0], [12.0, -3.0], [0.0, 0.0], [0.0, 0.0])
    np.testing.assert_array_equal(x, [0.8, 0.1])
    np.testing.assert_array_equal(y, [-0.2, 0.0])
    np.testing.assert_array_equal(z, [12.0, -3.0])
    assert np.all(np.isfinite(x))


def test_feature_layout_and_flags():
    pid = np.array([11, -13, 211, -321, 2212, -11])
    tt = np.array([3, 4, 5, 3, 4, 5])
    f = resolution_features(np.arange(6.0), np.arange(6.0) + 10, np.arange(6.0) + 20, np.full(6, 0.1),
                            np.full(6, -0.1), np.full(6, 4.0), pid, tt)
    assert f.dtype == np.float32 and f.shape == (6, len(RESOLUTION_INPUTS)) == (6, 12)
    np.testing.assert_array_equal(f[:, 6], [1, 0, 0, 0, 0, 1])   # is_e
    np.testing.assert_array_equal(f[:, 7], [0, 1, 0, 0, 0, 0])   # is_mu
    np.testing.assert_array_equal(f[:, 8], [0, 0, 1, 1, 1, 0])   # is_h
    np.testing.assert_array_equal(f[:, 9:], np.eye(3)[[0, 1, 2, 0, 1, 2]])
    c = covariance_features(f, np.ones(6), np.full(6, 20.5), np.full(6, 0.01))
    assert c.shape == (6, len(COVARIANCE_INPUTS)) == (6, 15)
    np.testing.assert_array_equal(c[:, :12], f)
    np.testing.assert_array_equal(physical_charge(pid), [-1, 1, 1, -1, 1, 1])


def test_features_from_momentum():
    f, ctb = resolution_features_from_momentum([0.8], [-0.2], [10.0], [300.0], [-400.0], [10000.0], [211], [3])
    p = np.sqrt(300**2 + 400**2 + 1e8)
    assert ctb["p"][0] == pytest.approx(p)
    assert f[0, 5] == pytest.approx(np.log10(p), rel=1e-6)
    assert f[0, 3] == pytest.approx(0.03) and f[0, 4] == pytest.approx(-0.04)
    assert ctb["x"][0] * 0.03 + ctb["y"][0] * -0.04 == pytest.approx(0, abs=1e-12)


def test_covariance_assembly_exact_for_valid_outputs():
    rng = np.random.default_rng(5)
    n = 200
    logv = rng.normal([-5, -5, -15, -15, -28], 1.0, (n, 5))
    corr = rng.uniform(-0.15, 0.15, (n, 10))  # always PD (diagonally dominant)
    cov, fixed = covariance_from_outputs(np.hstack([logv, corr]))
    assert not fixed.any()
    np.testing.assert_allclose(np.einsum("nii->ni", cov), np.exp(logv), rtol=1e-12)
    for k, (j, i) in enumerate(CORR_PAIRS):
        np.testing.assert_allclose(cov[:, j, i], corr[:, k] * np.sqrt(np.exp(logv[:, i] + logv[:, j])), rtol=1e-12)
    np.testing.assert_array_equal(cov, np.transpose(cov, (0, 2, 1)))
    assert len(COVARIANCE_OUTPUTS) == 15


def test_covariance_guard_makes_any_output_positive_definite():
    rng = np.random.default_rng(6)
    n = 2000
    y = np.hstack([rng.normal(-10, 20, (n, 5)), rng.uniform(-1.5, 1.5, (n, 10))])
    y[:10, 5] = np.nan          # foreign/NaN outputs
    y[10:20, 0] = 500.0         # absurd log-variance
    cov, fixed = covariance_from_outputs(y)
    assert fixed.mean() > 0.5   # most random matrices are not PD: the guard acted
    np.linalg.cholesky(cov)     # raises if any is not positive definite
    assert np.all(np.isfinite(cov))


def test_cpc_construction_is_always_positive_definite():
    from models.training.tracking.train_covariance import (CPC_MAX, SHRINK_EPS, corr_matrices, corr_to_cpc,
                                                           cpc_to_corr_numpy, nearest_pd_correlation)
    rng = np.random.default_rng(8)
    w = rng.normal(0, 2, (5000, 10))  # unconstrained values, many |cpc| at the bound
    cpc = np.clip(np.tanh(w), -CPC_MAX, CPC_MAX)
    r = cpc_to_corr_numpy(cpc)
    np.testing.assert_allclose(np.einsum("nii->ni", r), 1.0, atol=1e-12)
    # det R = prod(1 - cpc^2) > 0 (the construction's guarantee) ...
    det, ref = np.linalg.det(r), np.prod(1 - cpc**2, axis=1)
    big = ref > 1e-8
    np.testing.assert_allclose(det[big], ref[big], rtol=1e-6)
    assert np.all(det > 0)
    # ... and, after the graph's shrinkage (1 - eps) R + eps I, the Cholesky of the float32-rounded
    # outputs succeeds without the runtime guard, even with every cpc at the bound
    corr = (1 - SHRINK_EPS) * np.stack([r[:, j, i] for j, i in CORR_PAIRS], 1)
    y = np.hstack([np.full((5000, 5), -5.0), corr]).astype(np.float32)
    cov, fixed = covariance_from_outputs(y)
    np.linalg.cholesky(cov)
    assert not fixed.any()
    # without the shrinkage, float32 rounding does break some of them (why the shrinkage is there)
    y_raw = np.hstack([np.full((5000, 5), -5.0), corr / (1 - SHRINK_EPS)]).astype(np.float32)
    assert covariance_from_outputs(y_raw)[1].any()
    # round trip on well-conditioned matrices
    good = np.abs(cpc).max(axis=1) < 0.99
    np.testing.assert_allclose(corr_to_cpc(r[good]), cpc[good], atol=1e-8)
    # projection of non-PD reference-like matrices
    bad = corr_matrices(rng.uniform(-1.2, 1.2, (500, 10)))
    proj, n = nearest_pd_correlation(bad)
    assert n > 0 and np.linalg.eigvalsh(proj)[:, 0].min() > 0
