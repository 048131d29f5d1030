"""Constants of the reference detector (teacher) — not LHCb data.

Every number carries the status used in ``shared/reference/lhcb_performance.md``:
E = stated in the cited source's abstract or read from public LHCb code, C = commonly quoted, needs
confirmation, D = derived here, T = a nuisance parameter of this teacher, *tuned* so that the
integrated public figures are reproduced (see docs/pid_teacher.md).  Masses and lifetimes come from
the ``particle`` package only.
"""
from __future__ import annotations

import numpy as np
from particle import Particle

# --------------------------------------------------------------------------------------------
# species / hypotheses: dense index 0..4 = e, mu, pi, K, p (LHCb order of the DLLs)
HYPO_NAMES = ("e", "mu", "pi", "K", "p")
HYPO_PDG = np.array([11, 13, 211, 321, 2212], dtype=np.int64)
E, MU, PI, K, P = range(5)
N_HYPO = 5


def _mass(pdg):
    return float(Particle.from_pdgid(pdg).mass)  # MeV


def _ctau(pdg):
    return float(Particle.from_pdgid(pdg).ctau)  # mm (inf when stable)


HYPO_MASS = np.array([_mass(p) for p in HYPO_PDG], dtype=np.float64)          # MeV
HYPO_CTAU = np.array([_ctau(p) for p in HYPO_PDG], dtype=np.float64)          # mm, inf = stable
MUON_MASS = HYPO_MASS[MU]

# Branching fraction K+ -> mu+ nu_mu.  The `particle` package carries no branching fractions and
# the decay files shipped with decaylanguage treat K+- as stable, so this single value is quoted
# from the PDG (RPP 2024, Gamma_1 of K+: 63.56 %).  K -> pi0 mu nu (3.4 %) and muons from the pi+
# of K -> pi pi0 are neglected.
BR_K_TO_MUNU = 0.6356
BR_PI_TO_MUNU = 0.999877  # PDG: pi+ -> mu+ nu_mu (rest is e nu and radiative modes with e)

# --------------------------------------------------------------------------------------------
# geometry (mm).  z of the track-fit states: LHCb StateParameters.h (E); station z: C.
Z_RICH1 = (990.0, 2165.0)      # E (state positions; used as the C4F10 radiator extent)
Z_RICH2 = (9450.0, 11900.0)    # E
Z_MAGNET_KICK = 5265.0         # C (RapidSim RapidAcceptanceLHCb.cc)
PT_KICK = 1250.0               # MeV, C (1.2-1.3 GeV)
Z_T_END = 9410.0               # E, end of the T stations
Z_CALO = 12500.0               # C, ECAL front: a hadron must decay upstream of it to give a muon
Z_MUON = np.array([15200.0, 16400.0, 17600.0, 18800.0])  # M2..M5, C (JINST 3 S08005)

# RICH angular acceptances (rad, w.r.t. the nominal interaction point): C, JINST 3 S08005
# RICH1: 25-300 mrad horizontal, 25-250 mrad vertical; RICH2: 15-120 mrad h, 15-100 mrad v.
RICH_ACC_INNER = np.array([0.025, 0.015])
RICH_ACC_OUTER_X = np.array([0.300, 0.120])
RICH_ACC_OUTER_Y = np.array([0.250, 0.100])
# Muon system acceptance: 20 (16) mrad to 306 (258) mrad bending (non-bending): C, JINST 3 S08005
MUON_ACC_INNER = (0.020, 0.016)
MUON_ACC_OUTER = (0.306, 0.258)

# --------------------------------------------------------------------------------------------
# RICH radiators: 0 = C4F10 (RICH1), 1 = CF4 (RICH2)
RADIATOR_NAMES = ("C4F10", "CF4")
RICH_N_MINUS_1 = np.array([1.4e-3, 5.0e-4])      # C (JINST 3 S08005)
# photo-electron yield of a saturated (beta -> 1) track crossing the full radiator, Run-1 data
# with D* -> D0(K pi) pi tracks: C4F10 ~ 20, CF4 ~ 16 (C, EPJC 73 (2013) 2431).
RICH_NPE_SAT = np.array([20.0, 16.0])
# per-photon Cherenkov-angle resolution (rad), Run-1 data: 1.6 / 0.7 mrad (C, EPJC 73 (2013) 2431)
RICH_SIGMA_PHOTON = np.array([1.6e-3, 0.7e-3])

# --------------------------------------------------------------------------------------------
# MUON system
# minimum momentum (MeV) for a muon to reach M2..M5: the issue's ~3 GeV (M2-M3) and ~6 GeV (M2-M5),
# with three identical 80 cm iron filters -> 1.5 GeV lost per filter, 1.5 GeV before M2 (D).
MUON_P_REACH = np.array([1500.0, 3000.0, 4500.0, 6000.0])
MUON_RANGE_STRAGGLING = 0.06   # relative Gaussian spread of the energy loss (T, typical range straggling)
MUON_STATION_EFF = 0.99        # per-station hit efficiency, C (>99 % design)
# isMuon momentum ranges (MeV): 3-6 GeV M2+M3; 6-10 GeV M2+M3+(M4 or M5); >10 GeV M2..M5
# (C, arXiv:1306.0249).
ISMUON_P = (3000.0, 6000.0, 10000.0)
# material for multiple scattering: (z of the scattering plane [mm], thickness [X0], thickness [lambda_I])
# calorimeters (ECAL 25 X0 / 1.1 lambda + HCAL ~5.6 lambda ~ 94 cm Fe) and three 80 cm iron filters
ABSORBER_Z = np.array([13300.0, 15800.0, 17000.0, 18200.0])
ABSORBER_X0 = np.array([78.0, 45.5, 45.5, 45.5])
ABSORBER_LAMBDA = np.array([6.7, 4.77, 4.77, 4.77])
# logical pad size (mm) in region R1 of M2..M5 (x, y) projected; doubling per region R1..R4 (C, approx.)
MUON_PAD_R1_X = np.array([6.3, 6.7, 29.0, 31.0])
MUON_PAD_R1_Y = np.array([31.0, 34.0, 36.0, 39.0])
# half-size (mm) of region R1 at M2 (doubling per region, scaled projectively to other stations)
MUON_R1_HALF = (600.0, 500.0)
MUON_FOI_NSIGMA = 3.5          # FOI half-width in units of the expected muon spread (T)

# --------------------------------------------------------------------------------------------
# nuisance parameters (T): tuned once on the b-decay-like spectrum of sampling.py to reproduce the
# integrated public figures (docs/pid_teacher.md).  They stand for effects a Geant4 simulation has
# and this teacher does not model photon by photon.
NTRACKS_REF = 130.0            # reference occupancy (median of the Lamarr nTracks parametrisation), LHCb definition
# nTracks definitions: the teacher's occupancy physics is calibrated in LHCb's nTracks (all track types,
# VELO and T tracks included; Lamarr's parametrisation exp(4.8703 + 0.5921 N(0,1)) has median 130.4),
# while flashsim's RecSummary counts reconstructed long + upstream + downstream tracks only (median 22
# in 2016 minimum bias, models/occupancy/minbias_ntracks_2016-MagUp-13TeV.yaml).  The teacher's inputs
# are flashsim nTracks (what the flash PID is conditioned on); internally they are scaled by the ratio
# of the two medians.  tests/pid/test_teacher.py checks this ratio against the occupancy file.
NTRACKS_LHCB_PER_FLASHSIM = 130.4 / 22.0
# RICH_BKG_PER_TRACK, RICH_RING_LOSS and RICH_TRACK_TAIL_SCALE were set jointly on P(PIDK>0|pi), P(PIDK>5|pi),
# P(PIDp>0|pi) and the kaon efficiency at PIDK > 5 (docs/pid_teacher.md, 'Tuned nuisance parameters')
RICH_BKG_PER_TRACK = np.array([0.12, 0.12])   # photons of other rings in the ring window per nTracks, at RICH_BKG_THETA_REF (T)
RICH_RING_LOSS = np.array([0.30, 0.25])       # fraction of degraded rings: yield x U(0,1) unknown to the likelihood
                                              # (interactions in the radiator, unmodelled partial coverage) (T)
RICH_TRACK_SIGMA = np.array([0.4e-3, 0.2e-3]) # track-direction error at the radiator, per projection (rad): a 2-D
                                              # offset of the ring centre common to all photons of a ring (response.py)
MUON_HITS_PER_PAD = np.array([0.0036, 0.0018, 0.0012, 0.0012])   # random hits per logical pad at NTRACKS_REF;
# calibrated on isMuon of protons (0.0072), the species with no decay in flight (docs/pid_teacher.md)
PUNCH_LAMBDA_EFF = 1.6         # attenuation length of hadron-shower leakage (lambda_I) at 10 GeV
PUNCH_LAMBDA_SLOPE = 0.25      # d lambda_eff / d ln(p / 10 GeV)
RICH_BKG_FLOOR = np.array([0.5, 0.5])          # occupancy-independent background (noise, dark counts)
RICH_MS_TRACK = np.array([1.5e-3 * 1000.0, 0.3e-3 * 1000.0])  # rad*MeV: multiple-scattering term of the track direction
KINK_TOLERANCE = 0.020         # rad: a decay kink inside the tracking volume keeps the long track with prob.
                               # exp(-visible kink/tol); upstream of the magnet only the y component is visible (T)
RICH_RING_LOSS_BOTH = 0.0      # fraction of tracks whose rings are lost in both radiators (T)
RICH_TRACK_TAIL_FRAC = 0.30    # fraction of tracks whose direction error at the radiators is scaled up (T)
RICH_TRACK_TAIL_SCALE = 6.0    # scale of that tail (T)
# polar angle (rad) of the track at which RICH_BKG_PER_TRACK applies; the ring-overlap background of a
# track at polar angle theta scales as (theta_ref / max(theta, theta_max))^2 (D: dN/dOmega ~ 1/theta^2
# for a flat dN/deta, smoothed over one ring radius)
RICH_BKG_THETA_REF = np.array([0.075, 0.075])
# calorimeter depth traversed between the ECAL front and M2 (ECAL + HCAL, ~12.5-15.0 m, C) and its
# thickness in interaction lengths (the ABSORBER_LAMBDA of the calorimeter plane): a hadron decaying
# inside it gives a muon only if it has not interacted yet
CALO_DEPTH = 2500.0
CALO_LAMBDA_I = 6.7
