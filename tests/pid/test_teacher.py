"""Reference detector (teacher) for RICH and MUON PID: physics unit tests (not LHCb data)."""
import math

import numpy as np
import pytest
from scipy import stats

from algorithms.pid.teacher import constants as C
from algorithms.pid.teacher import (cherenkov_angle, cherenkov_threshold, decay_probability, expected_photons,
                                    max_cherenkov_angle, refractive_index, rich_muon_response, teacher_response)
from framework.random import RandomStreams

KEY = RandomStreams(7, 0, "PIDTeacherTest").key_for(0)
M = dict(zip(C.HYPO_NAMES, C.HYPO_MASS))


def tracks(n, pdg, p_mev, eta=3.0, phi=0.4, ntracks=22.0, first=0, charge=1):
    """n identical-kinematics tracks from the origin, each its own event (keys first..first+n-1)."""
    t = math.tan(2 * math.atan(math.exp(-eta)))
    return dict(pid=np.full(n, pdg), p=np.full(n, float(p_mev)), x=0.0, y=0.0, z=0.0, tx=t * math.cos(phi),
                ty=t * math.sin(phi), charge=charge, ntracks=ntracks, prod_z=0.0,
                event=np.arange(first, first + n), index=0, key=KEY)


def run(tr, **ov):
    return rich_muon_response(**tr, **ov)


# ------------------------------------------------------------------------------------ RICH
@pytest.mark.parametrize("rad", [0, 1])
@pytest.mark.parametrize("hyp", ["e", "mu", "pi", "K", "p"])
def test_threshold_formula_exact(rad, hyp):
    n = 1.0 + C.RICH_N_MINUS_1[rad]
    expect = M[hyp] / math.sqrt(n * n - 1.0)
    got = float(cherenkov_threshold(M[hyp], rad))
    assert abs(got / expect - 1) < 1e-6
    # angle is NaN just below and finite just above threshold
    assert np.isnan(cherenkov_angle(got * (1 - 1e-6), M[hyp], rad))
    assert np.isfinite(cherenkov_angle(got * (1 + 1e-6), M[hyp], rad))


def test_published_thresholds():
    # lhcb_performance.md (D): C4F10 pi 2.6, K 9.3, p 17.7 GeV; CF4 pi 4.4, K 15.6, p 29.7 GeV
    for rad, vals in ((0, (2.6, 9.3, 17.7)), (1, (4.4, 15.6, 29.7))):
        for hyp, v in zip(("pi", "K", "p"), vals):
            assert float(cherenkov_threshold(M[hyp], rad)) / 1000 == pytest.approx(v, abs=0.05)


@pytest.mark.parametrize("rad", [0, 1])
def test_cherenkov_angle_formula(rad):
    n = refractive_index(rad)
    p = np.geomspace(3e3, 2e5, 50)
    for m in C.HYPO_MASS:
        th = cherenkov_angle(p, m, rad)
        beta = p / np.hypot(p, m)
        ok = np.isfinite(th)
        assert np.allclose(np.cos(th[ok]), 1.0 / (n * beta[ok]), rtol=1e-12)
        assert np.all(th[ok] < max_cherenkov_angle(rad))
    # saturation: 53 / 32 mrad (lhcb_performance.md)
    assert max_cherenkov_angle(rad) * 1e3 == pytest.approx((53, 32)[rad], abs=0.5)
    assert cherenkov_angle(1e9, M["pi"], rad) == pytest.approx(max_cherenkov_angle(rad), rel=1e-6)


def test_kaon_below_threshold_gives_no_kaon_photons():
    pth = float(cherenkov_threshold(M["K"], 0))
    r = run(tracks(3000, 321, pth * (1 - 1e-6), eta=3.0))
    assert r["inRich1"].all()
    # only kaons that decayed upstream of the radiator (their muon radiates) have signal photons
    assert np.all(r["nSignalPhotons"][~r["decayedToMuon"], 0] == 0)
    assert r["decayedToMuon"].mean() < 0.12   # K -> mu nu before the calorimeter, after the kink veto
    # just above threshold light appears in RICH1 (yield grows from zero); well above it is abundant
    r2 = run(tracks(3000, 321, 20000.0, eta=3.0, first=10**6))
    assert r2["nSignalPhotons"][:, 0].mean() > 5


@pytest.mark.parametrize("p_gev,rad", [(6.0, 0), (20.0, 0), (40.0, 1), (80.0, 1)])
def test_photon_yield_poisson(p_gev, rad):
    """Mean and variance of the signal photon count = N_sat sin^2(theta)/sin^2(theta_max) (Poisson)."""
    n = 4000
    tr = tracks(n, 211, p_gev * 1e3, eta=3.2, phi=1.2)
    tx, ty = tr["tx"], tr["ty"]
    r = run(tr, RICH_RING_LOSS=np.zeros(2), RICH_RING_LOSS_BOTH=0.0)
    assert r["inRich1" if rad == 0 else "inRich2"].all()
    mu = float(expected_photons(p_gev * 1e3, M["pi"], rad, math.sqrt(1 + tx * tx + ty * ty)))
    k = r["nSignalPhotons"][:, rad]
    pull = (k.mean() - mu) / math.sqrt(mu / n)
    assert abs(pull) < 4, (k.mean(), mu)
    assert k.var() / mu == pytest.approx(1.0, abs=5 * math.sqrt(2.0 / n) + 0.02)


def test_veto_mode_and_no_rich():
    # 6 GeV: K below C4F10 threshold; a kaon is identified by the *absence* of the pion ring
    rk = run(tracks(2000, 321, 6000.0, eta=3.0))
    rp = run(tracks(2000, 211, 6000.0, eta=3.0, first=10**6))
    assert np.median(rk["RichDLLK"]) > 5 and np.median(rp["RichDLLK"]) < -5
    # no RICH: tracks outside both acceptances (eta = 1.5 -> 430 mrad) carry the -1000 convention
    ro = run(tracks(200, 321, 20000.0, eta=1.5))
    assert not ro["hasRich"].any()
    assert np.all(ro["RichDLLK"] == -1000.0)


def test_occupancy_broadens_dll():
    lo = run(tracks(4000, 211, 30000.0, ntracks=5.0))
    hi = run(tracks(4000, 211, 30000.0, ntracks=100.0))
    assert np.median(hi["RichDLLK"]) > np.median(lo["RichDLLK"])  # weaker separation at high occupancy
    assert hi["nBackgroundPhotons"].mean() > 5 * lo["nBackgroundPhotons"].mean()


# ------------------------------------------------------------------------------------ MUON
def test_ismuon_steps_at_3_and_6_gev():
    eff = {}
    full = {}
    for i, p in enumerate((2.9, 4.0, 5.0, 7.5, 20.0)):
        # vertical track: the magnet kick (1.25 GeV / p) keeps it inside the muon acceptance
        r = run(tracks(3000, -13, p * 1e3, eta=3.0, phi=math.pi / 2, first=i * 10**6, charge=1))
        assert r["InMuonAcc"].all()
        eff[p] = r["isMuon"].mean()
        # penetration of M2-M5 without uncorrelated (occupancy) hits
        r0 = run(tracks(3000, -13, p * 1e3, eta=3.0, phi=math.pi / 2, first=i * 10**6, charge=1),
                 MUON_HITS_PER_PAD=np.zeros(4))
        full[p] = np.mean(r0["nMuonHits"] == 4)
    assert eff[2.9] == 0.0                      # isMuon needs p > 3 GeV
    assert eff[4.0] > 0.9 and eff[20.0] > 0.95  # M2+M3 reached above ~3 GeV
    assert full[5.0] < 0.05 and full[7.5] > 0.9  # all of M2-M5 only above ~6 GeV


def test_muon_reach_thresholds():
    from algorithms.pid.teacher import muon_reach_probability
    assert muon_reach_probability(3000.0, 1) == pytest.approx(0.5)   # M3 at 3 GeV
    assert muon_reach_probability(6000.0, 3) == pytest.approx(0.5)   # M5 at 6 GeV


def test_decays_in_flight_rate():
    """Fraction of pions that decay to a muon upstream of the calorimeter = BR (1 - exp(-L/(beta gamma c tau)))."""
    n = 40000
    p = 5000.0
    tr = tracks(n, 211, p, eta=3.0)
    r = run(tr, KINK_TOLERANCE=1e9, CALO_DEPTH=1e-9)   # no kink veto, no decay inside the calorimeter
    ds = math.sqrt(1 + tr["tx"] ** 2 + tr["ty"] ** 2)
    expect = C.BR_PI_TO_MUNU * float(decay_probability(p, M["pi"], C.HYPO_CTAU[C.PI], C.Z_CALO, ds))
    k = r["decayedToMuon"].sum()
    assert stats.binomtest(int(k), n, expect).pvalue > 1e-3, (k / n, expect)
    # decays make pions muon-like: isMuon rate of decayed pions >> of the others
    assert r["isMuon"][r["decayedToMuon"]].mean() > 10 * r["isMuon"][~r["decayedToMuon"]].mean()


def test_decays_inside_calorimeter():
    """Decays between the ECAL front and the end of the calorimeter count only before the first hadronic
    interaction: extra rate BR * int_0^D a exp(-a (Z0 + t)) exp(-t / Lambda) dt, a = 1/(beta gamma c tau ds)."""
    n = 60000
    p = 4000.0
    tr = tracks(n, 211, p, eta=3.0, first=5 * 10**6)
    with_calo = run(tr, KINK_TOLERANCE=1e9)["decayedToMuon"].sum()
    without = run(tr, KINK_TOLERANCE=1e9, CALO_DEPTH=1e-9)["decayedToMuon"].sum()
    ds = math.sqrt(1 + tr["tx"] ** 2 + tr["ty"] ** 2)
    a = ds / (p / M["pi"] * C.HYPO_CTAU[C.PI])
    lam = C.CALO_DEPTH / C.CALO_LAMBDA_I
    extra = C.BR_PI_TO_MUNU * a * math.exp(-a * C.Z_CALO) * -math.expm1(-(a + 1 / lam) * C.CALO_DEPTH) / (a + 1 / lam)
    k = int(with_calo - without)            # same draws: the calorimeter decays are added on top
    assert k >= 0
    assert stats.binomtest(k, n, extra).pvalue > 1e-3, (k / n, extra)


def test_kink_veto_sees_only_y_upstream_of_magnet():
    """Upstream of the magnet the bending-plane kink is absorbed in the momentum: decays there survive
    with exp(-|kink sin phi|/tol), so more decays survive than those after the T stations (where there
    is no veto; a full-kink veto would remove nearly all others: K at 8 GeV, kink ~ 30 mrad >> 5 mrad)."""
    n = 60000
    p = 8000.0
    tr = tracks(n, 321, p, eta=3.0, first=7 * 10**6)
    r = run(tr, KINK_TOLERANCE=0.005, CALO_DEPTH=1e-9)
    free = run(tr, KINK_TOLERANCE=1e9, CALO_DEPTH=1e-9)
    assert np.all(r["decayedToMuon"] <= free["decayedToMuon"])   # the veto only removes decays
    kept = r["decayedToMuon"].sum() / free["decayedToMuon"].sum()
    ds = math.sqrt(1 + tr["tx"] ** 2 + tr["ty"] ** 2)
    a = ds / (p / M["K"] * C.HYPO_CTAU[C.K])
    after_t = (math.exp(-a * C.Z_T_END) - math.exp(-a * C.Z_CALO)) / -math.expm1(-a * C.Z_CALO)
    sigma = math.sqrt(after_t * (1 - after_t) / free["decayedToMuon"].sum())
    assert kept > after_t + 4 * sigma, (kept, after_t)
    assert kept < after_t + 0.2


def test_ring_overlap_background_scales_with_theta():
    """Other tracks' rings in the window: mean count bkg_per_track * nTracks * (theta_ref / theta)^2 + floor."""
    res = {}
    for eta, first in ((2.5, 0), (3.5, 10**6)):
        tr = tracks(4000, 211, 30000.0, eta=eta, phi=1.3, first=first)
        r = run(tr)
        theta = math.atan(math.hypot(tr["tx"], tr["ty"]))
        th_max = math.acos(1.0 / (1.0 + C.RICH_N_MINUS_1[0]))
        mean = C.RICH_BKG_PER_TRACK[0] * 22.0 * C.NTRACKS_LHCB_PER_FLASHSIM * (C.RICH_BKG_THETA_REF[0] / max(theta, th_max)) ** 2 + C.RICH_BKG_FLOOR[0]
        k = r["nBackgroundPhotons"][:, 0]
        assert abs(k.mean() - mean) < 4 * math.sqrt(mean / k.size), (eta, k.mean(), mean)
        res[eta] = k.mean()
    assert res[3.5] > 3 * res[2.5]       # (e^1)^2 ~ 7 more overlap background one unit of eta closer to the beam


def test_degraded_ring_keeps_a_uniform_fraction():
    """A degraded ring keeps a fraction U(0,1) of its yield: mean N/2, and a flat ratio N / N_expected."""
    n = 6000
    tr = tracks(n, 211, 40000.0, eta=3.0, phi=0.9)
    r = run(tr, RICH_RING_LOSS=np.ones(2), RICH_RING_LOSS_BOTH=0.0)
    mu = float(expected_photons(40000.0, M["pi"], 0, math.sqrt(1 + tr["tx"] ** 2 + tr["ty"] ** 2)))
    k = r["nSignalPhotons"][:, 0]
    # E[N] = mu/2, Var[N] = mu/2 + mu^2/12 (Poisson mixed over a uniform mean)
    assert abs(k.mean() - mu / 2) < 4 * math.sqrt((mu / 2 + mu * mu / 12) / n)


def test_ring_centre_error_broadens_without_shifting():
    """A track-direction error is a 2-D offset of the ring centre: it spreads each photon's reconstructed
    angle by d.(cos phi, sin phi) around the ring, it does not shift the whole ring.  With a 1.5 mrad
    direction error (no photon error, background, tail or ring loss) 40 GeV pions are still separated
    from kaons (Delta theta = 2.3 mrad in CF4; 16 photons of spread 1.5 mrad): P(DLLK > 0 | pi) must be
    ~0.  A coherent shift of all photons by N(0, 1.5 mrad) would instead give P ~ 0.2."""
    ov = dict(RICH_SIGMA_PHOTON=np.full(2, 1e-6), RICH_TRACK_SIGMA=np.full(2, 1.5e-3), RICH_MS_TRACK=np.zeros(2),
              RICH_TRACK_TAIL_FRAC=0.0, RICH_BKG_PER_TRACK=np.zeros(2), RICH_BKG_FLOOR=np.full(2, 1e-3),
              RICH_RING_LOSS=np.zeros(2), RICH_RING_LOSS_BOTH=0.0)
    n = 3000
    rpi = run(tracks(n, 211, 40000.0, eta=3.3, phi=0.9), **ov)
    rk = run(tracks(n, 321, 40000.0, eta=3.3, phi=0.9, first=10**6), **ov)
    assert rpi["hasRich"].all() and rk["hasRich"].all()
    assert np.mean(rpi["RichDLLK"] > 0) < 0.03, np.mean(rpi["RichDLLK"] > 0)
    assert np.mean(rk["RichDLLK"] > 0) > 0.97, np.mean(rk["RichDLLK"] > 0)


def test_muon_ll_separates():
    rm = run(tracks(3000, 13, 20000.0, charge=-1))
    rp = run(tracks(3000, 211, 4500.0, first=10**6))
    mu_dll = rm["MuonMuLL"][rm["isMuon"]] - rm["MuonBkgLL"][rm["isMuon"]]
    assert np.median(mu_dll) > 0
    assert np.all(rm["MuonMuLL"][~rm["isMuon"]] == -1000.0)
    if rp["isMuon"].sum() > 20:
        pi_dll = rp["MuonMuLL"][rp["isMuon"]] - rp["MuonBkgLL"][rp["isMuon"]]
        assert np.median(pi_dll) < np.median(mu_dll)


# ------------------------------------------------------------------------------------ global
def test_reproducible_regardless_of_batch():
    rng = np.random.default_rng(0)   # only to build the test batch, not used by the teacher
    n = 3000
    pid = rng.choice([11, 13, 211, 321, 2212], n)
    args = dict(pid=pid, p=rng.uniform(2e3, 1e5, n), x=0.0, y=0.0, z=rng.normal(0, 40, n), tx=rng.uniform(-0.2, 0.2, n),
                ty=rng.uniform(-0.2, 0.2, n), charge=rng.choice([-1, 1], n), ntracks=rng.uniform(3, 70, n),
                prod_z=0.0, event=rng.integers(0, 50, n), index=np.arange(n), key=KEY)
    full = teacher_response(**args)
    sub = rng.permutation(n)[:700]
    part = teacher_response(**{k: (v[sub] if isinstance(v, np.ndarray) else v) for k, v in args.items()})
    for c in ("RichDLLe", "RichDLLK", "RichDLLp", "isMuon", "MuonMuLL", "PIDmu", "ProbNNk"):
        np.testing.assert_array_equal(full[c][sub], part[c])
    other = teacher_response(**{**args, "key": RandomStreams(8, 0, "PIDTeacherTest").key_for(0)})
    assert not np.array_equal(full["RichDLLK"], other["RichDLLK"])


def test_probnn_normalised_and_ghost_zero():
    r = teacher_response(**tracks(500, 321, 15000.0))
    s = sum(r[c] for c in ("ProbNNe", "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp"))
    np.testing.assert_allclose(s, 1.0, rtol=1e-9)
    assert np.all(r["ProbNNghost"] == 0.0)
    assert np.mean(r["ProbNNk"]) > 0.5


def test_combined_dlls():
    r = teacher_response(**tracks(500, 13, 15000.0, charge=-1))
    np.testing.assert_array_equal(r["PIDK"], np.where(r["hasRich"], r["RichDLLK"], 0.0))
    np.testing.assert_allclose(r["PIDmu"], np.where(r["hasRich"], r["RichDLLmu"], 0.0) + r["muonDLL"])


def test_unknown_override_is_reported():
    with pytest.raises(ValueError, match="RICH_RING_LOSS"):
        run(tracks(3, 211, 1e4), RICH_RING_LOS=0.1)


def test_ntracks_definition_scale_matches_the_occupancy_file():
    """The teacher's inputs are flashsim nTracks; its occupancy physics is in LHCb's definition.
    The conversion is the ratio of the medians of the two distributions."""
    import numpy as np

    from algorithms.pid.teacher import constants as C
    from algorithms.pid.teacher.sampling import NTRACKS_YAML, sample_ntracks, sample_ntracks_flashsim

    u = (np.arange(20001) + 0.5) / 20001
    flash, desc = sample_ntracks_flashsim(u, NTRACKS_YAML)
    assert "minbias_ntracks" in desc
    lhcb, _ = sample_ntracks(u, None)
    assert abs(np.median(lhcb) / np.median(flash) / C.NTRACKS_LHCB_PER_FLASHSIM - 1) < 0.05
