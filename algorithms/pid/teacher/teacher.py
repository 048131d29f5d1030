"""Columnar entry points of the reference detector (teacher) — not LHCb data.

``teacher_response`` takes per-track columns and returns every PID output the flash models learn:
RICH DLLs, muon-system variables, combined DLLs and ProbNN.  It is slow compared with the flash
models (photon- and hit-level numba kernel) and is used to *produce training samples*; it never runs
in production options.
"""
from __future__ import annotations

import numpy as np

from . import constants as C
from .physics import species_index
from .response import teacher_kernel

__all__ = ["OUTPUT_COLUMNS", "RICH_COLUMNS", "rich_muon_response", "combine_dlls", "teacher_response"]

RICH_COLUMNS = ("RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp")
OUTPUT_COLUMNS = (
    "RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp", "hasRich",
    "isMuon", "InMuonAcc", "MuonMuLL", "MuonBkgLL",
    "PIDe", "PIDmu", "PIDK", "PIDp",
    "ProbNNe", "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp", "ProbNNghost",
)
NO_RICH = -1000.0   # LHCb ntuple convention for tracks without RICH information
NO_MUON = -1000.0   # Lamarr convention for MuonMuLL / MuonBkgLL when isMuon == 0


def _f64(a, n):
    a = np.asarray(a, dtype=np.float64)
    return np.ascontiguousarray(np.broadcast_to(a, (n,)))


def rich_muon_response(pid, p, x, y, z, tx, ty, charge, ntracks, prod_z, event, index, key,
                       **overrides):
    """Photon/hit-level RICH and MUON response of every track.

    Parameters (1-D arrays of one length N, or scalars broadcast to it)
      pid      true PDG id (e, mu, pi, K, p; anything else is treated as a pion)
      p        momentum [MeV] (the reconstructed one: the hypotheses and FOIs use it)
      x, y, z, tx, ty  closest-to-beam state [mm]; charge (+-1)
      ntracks  event occupancy in flashsim's definition (nTracks of /Event/Rec/Summary: reconstructed
               long + upstream + downstream tracks); scaled internally to LHCb's definition by
               ``NTRACKS_LHCB_PER_FLASHSIM`` (see constants.py)
      prod_z   true production-vertex z [mm] (start of the decay-in-flight flight path)
      event, index  counter-RNG keys (global event number, object index within the event)
      key      uint64 stream key (``RandomStreams.key_for(stream)`` / ``ctx.random.key``)
      overrides  replace any tunable constant of :mod:`constants` by name (tests, systematics)

    Returns a dict of arrays: loglik [N, 5] (ln L per hypothesis e, mu, pi, K, p), RichDLLe/mu/K/p,
    hasRich, inRich1, inRich2, nSignalPhotons [N, 2], nBackgroundPhotons [N, 2], InMuonAcc, isMuon,
    MuonMuLL, MuonBkgLL, muonDLL (muon term of PIDmu), nMuonHits, decayedToMuon.
    """
    sp = species_index(pid)
    n = sp.shape[0]
    sp = np.where(sp < 0, C.PI, sp).astype(np.int64)
    p = _f64(p, n)
    if np.any(~np.isfinite(p)) or np.any(p <= 0):
        raise ValueError("rich_muon_response: momenta must be finite and > 0 MeV")
    charge = _f64(charge, n)
    qop = np.where(charge >= 0, 1.0, -1.0) / p
    cst = {name: getattr(C, name) for name in dir(C) if name.isupper()}
    for k, v in overrides.items():
        if k not in cst:
            import difflib
            hint = difflib.get_close_matches(k, list(cst), n=1)
            raise ValueError(f"unknown teacher constant {k!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
        cst[k] = v
    g = lambda name: np.ascontiguousarray(np.asarray(cst[name], dtype=np.float64))  # noqa: E731
    br = np.zeros(C.N_HYPO)
    br[C.PI] = cst["BR_PI_TO_MUNU"]
    br[C.K] = cst["BR_K_TO_MUNU"]
    z_rich = np.array([0.5 * sum(cst["Z_RICH1"]), 0.5 * sum(cst["Z_RICH2"])])

    loglik = np.zeros((n, C.N_HYPO))
    has_rich = np.zeros(n, dtype=np.bool_)
    in_rich = np.zeros((n, 2), dtype=np.bool_)
    n_sig = np.zeros((n, 2), dtype=np.int32)
    n_bkg = np.zeros((n, 2), dtype=np.int32)
    in_acc = np.zeros(n, dtype=np.bool_)
    is_muon = np.zeros(n, dtype=np.bool_)
    mu_ll = np.zeros(n)
    bkg_ll = np.zeros(n)
    mterm = np.zeros(n)
    n_hits = np.zeros(n, dtype=np.int32)
    decayed = np.zeros(n, dtype=np.bool_)
    ev = np.ascontiguousarray(np.broadcast_to(np.asarray(event, dtype=np.int64), (n,)))
    ix = np.ascontiguousarray(np.broadcast_to(np.asarray(index, dtype=np.int64), (n,)))
    teacher_kernel(
        sp, p, _f64(x, n), _f64(y, n), _f64(z, n), _f64(tx, n), _f64(ty, n), qop,
        _f64(ntracks, n) * float(cst["NTRACKS_LHCB_PER_FLASHSIM"]), _f64(prod_z, n), ev, ix, np.uint64(key),
        g("HYPO_MASS"), g("HYPO_CTAU"), g("RICH_N_MINUS_1"), g("RICH_NPE_SAT"), g("RICH_SIGMA_PHOTON"),
        g("RICH_TRACK_SIGMA"), g("RICH_MS_TRACK"), float(cst["RICH_TRACK_TAIL_FRAC"]), float(cst["RICH_TRACK_TAIL_SCALE"]), g("RICH_BKG_PER_TRACK"), g("RICH_RING_LOSS"), float(cst["RICH_RING_LOSS_BOTH"]),
        g("RICH_BKG_FLOOR"), z_rich, g("RICH_ACC_INNER"), g("RICH_ACC_OUTER_X"), g("RICH_ACC_OUTER_Y"),
        g("Z_MUON"), g("MUON_P_REACH"), float(cst["MUON_RANGE_STRAGGLING"]), float(cst["MUON_STATION_EFF"]),
        g("ABSORBER_Z"), g("ABSORBER_X0"), g("ABSORBER_LAMBDA"), g("MUON_PAD_R1_X"), g("MUON_PAD_R1_Y"),
        float(cst["MUON_R1_HALF"][0]), float(cst["MUON_R1_HALF"][1]), float(cst["MUON_FOI_NSIGMA"]),
        g("MUON_HITS_PER_PAD"), float(cst["NTRACKS_REF"]), float(cst["PUNCH_LAMBDA_EFF"]),
        float(cst["PUNCH_LAMBDA_SLOPE"]), br, float(cst["Z_CALO"]), float(cst["KINK_TOLERANCE"]), float(cst["Z_T_END"]), float(cst["Z_MAGNET_KICK"]),
        float(cst["PT_KICK"]), float(cst["MUON_ACC_INNER"][0]), float(cst["MUON_ACC_INNER"][1]),
        float(cst["MUON_ACC_OUTER"][0]), float(cst["MUON_ACC_OUTER"][1]),
        g("RICH_BKG_THETA_REF"), float(cst["CALO_DEPTH"]), float(cst["CALO_DEPTH"]) / float(cst["CALO_LAMBDA_I"]),
        loglik, has_rich, in_rich, n_sig, n_bkg, in_acc, is_muon, mu_ll, bkg_ll, mterm, n_hits, decayed,
    )
    dll = loglik - loglik[:, [C.PI]]
    out = {"loglik": loglik, "hasRich": has_rich, "inRich1": in_rich[:, 0], "inRich2": in_rich[:, 1],
           "nSignalPhotons": n_sig, "nBackgroundPhotons": n_bkg}
    for name, h in zip(RICH_COLUMNS, (C.E, C.MU, C.K, C.P)):
        out[name] = np.where(has_rich, dll[:, h], NO_RICH)
    out.update(InMuonAcc=in_acc, isMuon=is_muon, MuonMuLL=mu_ll, MuonBkgLL=bkg_ll, muonDLL=mterm,
               nMuonHits=n_hits, decayedToMuon=decayed)
    return out


def combine_dlls(resp: dict, calo_dll_e=None) -> dict:
    """Combined DLLs relative to the pion: RICH + muon (+ calorimeter hook).

    PIDe  = RichDLLe + calo_dll_e (calorimeter electron term; 0 until the ECAL branch provides it)
    PIDmu = RichDLLmu + muonDLL   (MuonMuLL - MuonBkgLL if isMuon, else ln[(1-eff_mu)/(1-eff_bkg)])
    PIDK  = RichDLLK,  PIDp = RichDLLp.   Tracks without RICH information contribute 0 RICH term.
    """
    has = np.asarray(resp["hasRich"], dtype=bool)
    r = {k: np.where(has, resp[k], 0.0) for k in RICH_COLUMNS}
    calo = 0.0 if calo_dll_e is None else np.asarray(calo_dll_e, dtype=np.float64)
    return {
        "PIDe": r["RichDLLe"] + calo,
        "PIDmu": r["RichDLLmu"] + resp["muonDLL"],
        "PIDK": r["RichDLLK"],
        "PIDp": r["RichDLLp"],
    }


def teacher_response(pid, p, x, y, z, tx, ty, charge, ntracks, prod_z, event, index, key,
                     eta=None, probnn=None, calo_dll_e=None, **overrides) -> dict:
    """Every output column of OUTPUT_COLUMNS (plus diagnostics) for a set of tracks.

    ``probnn``: a :class:`~algorithms.pid.teacher.probnn.ProbNN` (default: the committed weights);
    pass ``False`` to skip ProbNN (columns filled with NaN), e.g. while producing its training set.
    """
    resp = rich_muon_response(pid, p, x, y, z, tx, ty, charge, ntracks, prod_z, event, index, key, **overrides)
    resp.update(combine_dlls(resp, calo_dll_e))
    n = len(resp["PIDK"])
    if eta is None:
        t = np.hypot(np.asarray(tx, dtype=np.float64), np.asarray(ty, dtype=np.float64))
        eta = -np.log(np.tan(0.5 * np.arctan(t)))
    if probnn is False:
        probs = np.full((n, 5), np.nan)
    else:
        from .probnn import ProbNN, probnn_features
        model = probnn if probnn is not None else ProbNN.default()
        probs = model.predict(probnn_features(resp, p, eta, ntracks))
    for j, name in enumerate(("ProbNNe", "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp")):
        resp[name] = probs[:, j]
    resp["ProbNNghost"] = np.zeros(n)   # flashsim generates no ghost tracks (documented)
    return resp
