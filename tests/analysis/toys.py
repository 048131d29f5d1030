"""Toy generator for vertex-fit / DecayTreeFitter tests: B+ -> J/psi(-> mu+ mu-) K+.

True decays with a displaced B vertex (exponential decay time, PDG B+ lifetime), exact
straight-line track states at the closest-to-beam point, smeared with known, realistic LHCb-like
covariances (sigma x,y 10-30 um, sigma tx,ty 1.5e-4-1e-3 with x-tx correlation, sigma(q/p)/(q/p) =
0.5 %); the PV is smeared with 10/10/50 um.  Random numbers come from counter-based streams keyed by
(toy number, object index, draw): a toy does not depend on how many others are generated.

Track order: mu+, mu-, K+ (the DecayTreeFitter spec order of ``B+ -> (J/psi(1S) -> mu+ mu-) K+``).
"""
from __future__ import annotations

import numpy as np

from algorithms.analysis.kinematics import pdg_ctau, pdg_mass
from framework.random import RandomStreams

M_B = pdg_mass(521)
M_JPSI = pdg_mass(443)
M_K = pdg_mass(321)
M_MU = pdg_mass(13)
CTAU_B = pdg_ctau(521)


def _two_body(M, m1, m2, cth, phi):
    pst = np.sqrt((M * M - (m1 + m2) ** 2) * (M * M - (m1 - m2) ** 2)) / (2 * M)
    sth = np.sqrt(1 - cth * cth)
    p = np.stack([pst * sth * np.cos(phi), pst * sth * np.sin(phi), pst * cth], axis=-1)
    E1 = np.full(cth.shape, np.sqrt(pst**2 + m1 * m1))
    E2 = np.full(cth.shape, np.sqrt(pst**2 + m2 * m2))
    return np.concatenate([p, E1[:, None]], 1), np.concatenate([-p, E2[:, None]], 1)


def _boost(p4, P):
    """Boost p4 (rest frame of P) into the frame where P has four-momentum P."""
    b = P[:, :3] / P[:, 3:4]
    b2 = np.sum(b * b, 1)
    g = 1.0 / np.sqrt(1 - b2)
    bp = np.sum(b * p4[:, :3], 1)
    g2 = np.where(b2 > 0, (g - 1) / b2, 0.0)
    out = np.empty_like(p4)
    out[:, :3] = p4[:, :3] + (g2 * bp + g * p4[:, 3])[:, None] * b
    out[:, 3] = g * (p4[:, 3] + bp)
    return out


def track_cov(p, pt, rho=-0.6):
    """LHCb-like 5x5 covariance of (x, y, tx, ty, q/p) for momentum p, pT [MeV] (q/p = 1/p)."""
    n = p.shape[0]
    sx = 0.010 + 0.020 * np.minimum(1.0, 1000.0 / pt)
    stx = 1.5e-4 + 1.0e-3 * np.minimum(1.0, 2000.0 / p)
    sq = 0.005 / p
    C = np.zeros((n, 5, 5))
    C[:, 0, 0] = C[:, 1, 1] = sx * sx
    C[:, 2, 2] = C[:, 3, 3] = stx * stx
    C[:, 0, 2] = C[:, 2, 0] = C[:, 1, 3] = C[:, 3, 1] = rho * sx * stx
    C[:, 4, 4] = sq * sq
    C[:, 2, 4] = C[:, 4, 2] = 0.1 * stx * sq
    return C


def generate(n, seed=12345, first=0, pv_sigma=(0.010, 0.010, 0.050), _oversample=2.0):
    """n accepted toys (all tracks forward within 400 mrad).  Returns a dict with ``states``
    (n,3,5) measured, ``covs`` (n,3,5,5), ``z`` (n,3), ``true_states`` (n,3,5), ``pv`` (n,3)
    measured, ``pv_cov`` (n,3,3), ``true_pv``, ``true_sv`` (n,3), true four-momenta ``p4_B``,
    ``p4_Jpsi``, ``p4_tracks`` (n,3,4), ``true_L`` [mm], ``true_ctau`` [mm], ``masses`` (3,)."""
    rs = RandomStreams(seed, 0, "dtf-toys")
    ntry = int(n * _oversample) + 200
    ev = np.arange(first, first + ntry, dtype=np.int64)
    u = rs.uniform(ev, 0, stream=0, n=9)
    pt = 2000.0 + rs.exponential(ev, 0, stream=1) * 4000.0
    eta = 2.0 + 3.0 * u[:, 0]
    phi = 2 * np.pi * u[:, 1]
    pz = pt * np.sinh(eta)
    PB = np.stack([pt * np.cos(phi), pt * np.sin(phi), pz, np.sqrt(pt**2 + pz**2 + M_B**2)], 1)
    pB = np.sqrt(np.sum(PB[:, :3] ** 2, 1))
    L = pB / M_B * CTAU_B * rs.exponential(ev, 0, stream=2)
    pvn = rs.normal(ev, 0, stream=3, n=6)
    true_pv = np.stack([0.8 + 0.03 * pvn[:, 0], -0.2 + 0.03 * pvn[:, 1], 40.0 * pvn[:, 2]], 1)
    sv = true_pv + L[:, None] * PB[:, :3] / pB[:, None]
    jpsi, kaon = _two_body(M_B, M_JPSI, M_K, 2 * u[:, 2] - 1, 2 * np.pi * u[:, 3])
    jpsi, kaon = _boost(jpsi, PB), _boost(kaon, PB)
    mup, mum = _two_body(M_JPSI, M_MU, M_MU, 2 * u[:, 4] - 1, 2 * np.pi * u[:, 5])
    mup, mum = _boost(mup, jpsi), _boost(mum, jpsi)
    trk = np.stack([mup, mum, kaon], 1)  # (ntry, 3, 4)
    charge = np.array([1.0, -1.0, 1.0])
    ok = np.all(trk[:, :, 2] > 0, 1)
    slope = np.sqrt(trk[:, :, 0] ** 2 + trk[:, :, 1] ** 2) / np.where(trk[:, :, 2] > 0, trk[:, :, 2], 1.0)
    ok &= np.all(slope < 0.4, 1)
    sel = np.flatnonzero(ok)[:n]
    if sel.size < n:
        return generate(n, seed, first, pv_sigma, _oversample * 1.5)
    ev, PB, jpsi, trk, L, sv, true_pv = ev[sel], PB[sel], jpsi[sel], trk[sel], L[sel], sv[sel], true_pv[sel]
    p = np.sqrt(np.sum(trk[:, :, :3] ** 2, 2))
    tx = trk[:, :, 0] / trk[:, :, 2]
    ty = trk[:, :, 1] / trk[:, :, 2]
    # reference z: closest approach of the true line to the beam (z) axis
    zref = sv[:, None, 2] - (sv[:, None, 0] * tx + sv[:, None, 1] * ty) / (tx * tx + ty * ty)
    x = sv[:, None, 0] + (zref - sv[:, None, 2]) * tx
    y = sv[:, None, 1] + (zref - sv[:, None, 2]) * ty
    true_states = np.stack([x, y, tx, ty, charge[None, :] / p], 2)
    pt_trk = np.sqrt(trk[:, :, 0] ** 2 + trk[:, :, 1] ** 2)
    covs = track_cov(p.reshape(-1), pt_trk.reshape(-1)).reshape(n, 3, 5, 5)
    covs[:, :, 2, 4] *= charge[None, :]
    covs[:, :, 4, 2] *= charge[None, :]
    Lc = np.linalg.cholesky(covs)
    states = np.empty_like(true_states)
    for j in range(3):
        g = rs.normal(ev, j, stream=4, n=5)
        states[:, j] = true_states[:, j] + np.einsum("nab,nb->na", Lc[:, j], g)
    pv_cov = np.zeros((n, 3, 3))
    for a in range(3):
        pv_cov[:, a, a] = pv_sigma[a] ** 2
    pv = true_pv + rs.normal(ev, 0, stream=5, n=3) * np.asarray(pv_sigma)[None, :]
    pB = np.sqrt(np.sum(PB[:, :3] ** 2, 1))
    return dict(states=states, covs=covs, z=zref, true_states=true_states, pv=pv, pv_cov=pv_cov,
                true_pv=true_pv, true_sv=sv, p4_B=PB, p4_Jpsi=jpsi, p4_tracks=trk, true_L=L,
                true_ctau=L * M_B / pB, masses=np.array([M_MU, M_MU, M_K]), charges=charge, event=ev)
