"""IP / IPchi2 numba kernels vs an independent numpy computation, and chi2(2) in a Gaussian toy."""
import numpy as np
from scipy import stats

from algorithms.tracking.ip import best_pv_per_track, ip_ipchi2, ip_ipchi2_pairs


def random_cov(rng, sig):
    """Random covariance with the given standard deviations and random correlations."""
    n = len(sig)
    a = rng.normal(size=(n, n + 2))
    c = a @ a.T
    d = np.sqrt(np.diag(c))
    corr = c / np.outer(d, d)
    return corr * np.outer(sig, sig)


def perp_residual(params):
    """3-D perpendicular residual from the vertex to the line; params = x, y, tx, ty, vx, vy, vz
    (track reference z = 0)."""
    x, y, tx, ty, vx, vy, vz = params
    d = np.array([tx, ty, 1.0]) / np.sqrt(1 + tx * tx + ty * ty)
    r = np.array([x - vx, y - vy, 0.0 - vz])
    return r - (r @ d) * d


def numpy_ip_chi2(x, y, z, tx, ty, ctrk, v, cv):
    """Independent computation: 3-D perpendicular residual (direction varies with the slopes),
    expressed in a fixed orthonormal basis of the plane perpendicular to the track; numerical
    Jacobian w.r.t. (x, y, tx, ty, vx, vy, vz); chi2 = s^T (J C J^T)^-1 s."""
    p0 = np.array([x, y, tx, ty, v[0], v[1], v[2] - z])
    d0 = np.array([tx, ty, 1.0]) / np.sqrt(1 + tx * tx + ty * ty)
    e1 = np.cross(d0, [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d0, e1)
    basis = np.stack([e1, e2])

    def s(params):
        return basis @ perp_residual(params)

    jac = np.empty((2, 7))
    for k in range(7):
        h = 1e-6 * max(1.0, abs(p0[k]))
        dp = np.zeros(7)
        dp[k] = h
        jac[:, k] = (s(p0 + dp) - s(p0 - dp)) / (2 * h)
    cfull = np.zeros((7, 7))
    cfull[:4, :4] = ctrk[:4, :4]
    cfull[4:, 4:] = cv
    c2 = jac @ cfull @ jac.T
    r = perp_residual(p0)
    s0 = s(p0)
    return np.linalg.norm(r), float(s0 @ np.linalg.solve(c2, s0))


def test_kernel_matches_independent_numpy():
    rng = np.random.default_rng(11)
    for _ in range(200):
        z = rng.normal(0, 50)
        tx, ty = rng.normal(0, 0.15, 2)
        x, y = rng.normal(0, 0.5, 2)
        # vertex a few sigma from the line (the regime where the linearisations must agree;
        # for residuals >> errors the two linearisations differ at second order)
        vz = z + rng.normal(0, 30)
        v = np.array([x + tx * (vz - z) + rng.normal(0, 0.05), y + ty * (vz - z) + rng.normal(0, 0.05), vz])
        ctrk = np.zeros((5, 5))
        ctrk[:4, :4] = random_cov(rng, [0.02, 0.02, 3e-4, 3e-4])
        ctrk[4, 4] = 1e-12
        cv = random_cov(rng, [0.012, 0.012, 0.07])
        ip, chi2 = ip_ipchi2(x, y, z, tx, ty, ctrk, v[0], v[1], v[2], cv)
        ip_ref, chi2_ref = numpy_ip_chi2(x, y, z, tx, ty, ctrk, v, cv)
        assert abs(ip - ip_ref) < 1e-9 * max(1, ip_ref)
        assert abs(chi2 - chi2_ref) < 2e-3 * max(1.0, chi2_ref), (chi2, chi2_ref)


def test_ipchi2_of_tracks_from_true_vertex_is_chi2_2():
    rng = np.random.default_rng(12)
    n = 4000
    chi2s = np.empty(n)
    ips_pull = []
    for i in range(n):
        vtrue = np.array([0.83, -0.17, rng.normal(0, 45)])
        tx, ty = rng.normal(0, 0.1, 2)
        zref = vtrue[2] + rng.uniform(-5, 5)
        state = np.array([vtrue[0] + tx * (zref - vtrue[2]), vtrue[1] + ty * (zref - vtrue[2]), tx, ty])
        ctrk = np.zeros((5, 5))
        ctrk[:4, :4] = random_cov(rng, [0.015, 0.015, 4e-4, 4e-4])
        ctrk[4, 4] = 1e-12
        meas = rng.multivariate_normal(state, ctrk[:4, :4])
        cv = random_cov(rng, [0.01, 0.01, 0.05])
        vmeas = rng.multivariate_normal(vtrue, cv)
        _, chi2s[i] = ip_ipchi2(meas[0], meas[1], zref, meas[2], meas[3], ctrk, vmeas[0], vmeas[1], vmeas[2], cv)
    r = stats.kstest(chi2s, stats.chi2(2).cdf)
    assert r.pvalue > 0.01, r
    assert abs(chi2s.mean() - 2) < 5 * 2 / np.sqrt(n)


def test_pairs_and_best_pv():
    rng = np.random.default_rng(13)
    # 3 events: 2 tracks/2 PVs, 0 tracks/1 PV, 3 tracks/0 PVs
    t_off = np.array([0, 2, 2, 5])
    v_off = np.array([0, 2, 3, 3])
    nt, nv = 5, 3
    x, y = rng.normal(0, 0.1, nt), rng.normal(0, 0.1, nt)
    z = rng.normal(0, 10, nt)
    tx, ty = rng.normal(0, 0.1, nt), rng.normal(0, 0.1, nt)
    ctrk = np.stack([np.diag([1e-4, 1e-4, 1e-7, 1e-7, 1e-12])] * nt)
    vx, vy, vz = rng.normal(0, 0.1, nv), rng.normal(0, 0.1, nv), rng.normal(0, 10, nv)
    cv = np.stack([np.diag([1e-4, 1e-4, 1e-2])] * nv)
    off, trk, pv, ip, chi2 = ip_ipchi2_pairs(t_off, x, y, z, tx, ty, ctrk, v_off, vx, vy, vz, cv)
    np.testing.assert_array_equal(off, [0, 4, 4, 4])
    np.testing.assert_array_equal(trk, [0, 0, 1, 1])
    np.testing.assert_array_equal(pv, [0, 1, 0, 1])
    for k in range(4):
        a, b = ip_ipchi2(x[trk[k]], y[trk[k]], z[trk[k]], tx[trk[k]], ty[trk[k]], ctrk[trk[k]],
                         vx[pv[k]], vy[pv[k]], vz[pv[k]], cv[pv[k]])
        assert (a, b) == (ip[k], chi2[k])
    best, bip, bchi2 = best_pv_per_track(t_off, v_off, off, ip, chi2)
    for t in range(2):
        j = int(np.argmin(chi2[2 * t:2 * t + 2]))
        assert best[t] == j and bchi2[t] == chi2[2 * t + j] and bip[t] == ip[2 * t + j]
    assert np.all(best[2:] == -1) and np.all(np.isnan(bchi2[2:]))
