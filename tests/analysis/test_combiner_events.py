"""Synthetic events for the analysis tests (no tests here): MC truth with B+ -> J/psi(mu+ mu-) K+
signal decays and prompt hadrons, reconstructed tracks (straight lines smeared with known
covariances), PVs, ProtoParticles (simple PID), RecSummary; plus a test producer algorithm and a
plugin that registers it with the analysis algorithms."""
from __future__ import annotations

import numpy as np

from framework import Algorithm, Collection, Output, Property, hookimpl

M_B, M_JPSI, M_MU, M_K, M_PI, M_P = 5279.34, 3096.9, 105.6583755, 493.677, 139.57039, 938.272
CTAU_B = 0.4911
C = 299.792458


def _two_body(M, m1, m2, rng):
    pst = np.sqrt((M * M - (m1 + m2) ** 2) * (M * M - (m1 - m2) ** 2)) / (2 * M)
    cth = rng.uniform(-1, 1)
    phi = rng.uniform(0, 2 * np.pi)
    sth = np.sqrt(1 - cth * cth)
    p = pst * np.array([sth * np.cos(phi), sth * np.sin(phi), cth])
    return np.append(p, np.sqrt(pst**2 + m1 * m1)), np.append(-p, np.sqrt(pst**2 + m2 * m2))


def _boost(p4, P):
    b = P[:3] / P[3]
    b2 = b @ b
    g = 1 / np.sqrt(1 - b2)
    bp = b @ p4[:3]
    g2 = (g - 1) / b2 if b2 > 0 else 0.0
    out = np.empty(4)
    out[:3] = p4[:3] + (g2 * bp + g * p4[3]) * b
    out[3] = g * (p4[3] + bp)
    return out


def track_cov(p, pt):
    sx = 0.012 + 0.020 * min(1.0, 1000.0 / pt)
    stx = 1.5e-4 + 1.0e-3 * min(1.0, 2000.0 / p)
    sq = 0.005 / p
    Cm = np.zeros((5, 5))
    Cm[0, 0] = Cm[1, 1] = sx * sx
    Cm[2, 2] = Cm[3, 3] = stx * stx
    Cm[0, 2] = Cm[2, 0] = Cm[1, 3] = Cm[3, 1] = -0.6 * sx * stx
    Cm[4, 4] = sq * sq
    return Cm


class _Ev:
    def __init__(self):
        self.parts, self.verts, self.colls = [], [], []

    def vertex(self, pos, typ, coll):
        self.verts.append((pos[0], pos[1], pos[2], 0.0, typ, coll))
        return len(self.verts) - 1

    def particle(self, pid, p4, mass, ov, ev_, mother, coll, sig=False):
        self.parts.append((pid, p4[0], p4[1], p4[2], p4[3], mass, ov, ev_, mother, coll, sig, 1 if ev_ < 0 else 2))
        return len(self.parts) - 1


def _kin(rng, m, pt_mean, pt_min, eta=(2.0, 4.8)):
    pt = pt_min + rng.exponential(pt_mean)
    et = rng.uniform(*eta)
    phi = rng.uniform(0, 2 * np.pi)
    p = np.array([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(et)])
    return np.append(p, np.sqrt(p @ p + m * m))


def _signal(e: _Ev, rng, pv, pv_index, coll, bplus=True):
    s = 1 if bplus else -1
    PB = _kin(rng, M_B, 5000.0, 1000.0)
    pB = np.linalg.norm(PB[:3])
    L = pB / M_B * CTAU_B * rng.exponential()
    sv = pv + L * PB[:3] / pB
    ib = e.particle(521 * s, PB, M_B, pv_index, -1, -1, coll, True)
    vb = e.vertex(sv, 2, coll)
    e.parts[ib] = e.parts[ib][:7] + (vb,) + e.parts[ib][8:]
    pj, pk = _two_body(M_B, M_JPSI, M_K, rng)
    pj, pk = _boost(pj, PB), _boost(pk, PB)
    ij = e.particle(443, pj, M_JPSI, vb, -1, ib, coll)
    vj = e.vertex(sv, 2, coll)
    e.parts[ij] = e.parts[ij][:7] + (vj,) + e.parts[ij][8:]
    e.particle(321 * s, pk, M_K, vb, -1, ib, coll)
    m1, m2 = _two_body(M_JPSI, M_MU, M_MU, rng)
    e.particle(-13, _boost(m1, pj), M_MU, vj, -1, ij, coll)
    e.particle(13, _boost(m2, pj), M_MU, vj, -1, ij, coll)


def make_events(n_events, seed=1, signal_fraction=1.0, n_prompt=(3, 10), n_collisions=1, kinds=(211, 321, 2212),
                prompt_muons=0):
    """Dict of event-store collections for ``n_events`` synthetic events (see module doc)."""
    rng = np.random.default_rng(seed)
    P, V, CO, H, T, PV, PP = [], [], [], [], [], [], []
    for _ in range(n_events):
        e = _Ev()
        colls = []
        for c in range(n_collisions):
            pv = np.array([0.8 + 0.03 * rng.normal(), -0.2 + 0.03 * rng.normal(), 40 * rng.normal()])
            colls.append(pv)
            iv = e.vertex(pv, 1, c)
            if c == 0 and rng.uniform() < signal_fraction:
                _signal(e, rng, pv, iv, c, bplus=rng.uniform() < 0.5)
            for _k in range(rng.integers(n_prompt[0], n_prompt[1] + 1)):
                a = kinds[rng.integers(len(kinds))]
                m = {211: M_PI, 321: M_K, 2212: M_P}[a]
                e.particle(a * (1 if rng.uniform() < 0.5 else -1), _kin(rng, m, 600.0, 200.0), m, iv, -1, -1, c)
            for _k in range(prompt_muons):
                e.particle(13 * (1 if rng.uniform() < 0.5 else -1), _kin(rng, M_MU, 1500.0, 500.0), M_MU, iv, -1, -1, c)
        P.append(e.parts)
        V.append(e.verts)
        CO.append(colls)
        H.append((n_collisions, -1, int(rng.integers(1, 4))))
        # reconstruction
        trk = []
        for i, p in enumerate(e.parts):
            pid, px, py, pz, E, m, ov, endv = p[:8]
            if endv >= 0 or abs(pid) not in (11, 13, 211, 321, 2212):
                continue
            q = -1 if pid in (11, 13, -211, -321, -2212) else 1
            x0 = np.array(e.verts[ov][:3])
            tx, ty = px / pz, py / pz
            t = -(x0[0] * tx + x0[1] * ty) / (tx * tx + ty * ty)
            zr = x0[2] + t
            pm = np.sqrt(px * px + py * py + pz * pz)
            true = np.array([x0[0] + tx * t, x0[1] + ty * t, tx, ty, q / pm])
            Cm = track_cov(pm, np.hypot(px, py))
            meas = true + np.linalg.cholesky(Cm) @ rng.normal(size=5)
            isk, ismu, isp = abs(pid) == 321, abs(pid) == 13, abs(pid) == 2212
            trk.append((i, 3, *meas, zr, q, Cm, isk, ismu, isp))
        T.append(trk)
        pvs = []
        for c, pv in enumerate(colls):
            cv = np.diag([0.010**2, 0.010**2, 0.050**2])
            pvs.append((pv + np.sqrt(np.diag(cv)) * rng.normal(size=3), cv, c))
        PV.append(pvs)
    return _collections(P, V, CO, H, T, PV, rng)


def _collections(P, V, CO, H, T, PV, rng):
    n = len(P)
    nev = np.arange(n)
    flat = [p for ev in P for p in ev]
    cnt = [len(ev) for ev in P]
    a = lambda i, dt: np.array([p[i] for p in flat], dtype=dt)  # noqa: E731
    mcp = Collection.from_counts({"pid": a(0, np.int32), "px": a(1, float), "py": a(2, float), "pz": a(3, float),
                                  "E": a(4, float), "mass": a(5, float), "origin_vertex": a(6, np.int32),
                                  "end_vertex": a(7, np.int32), "mother": a(8, np.int32), "collision": a(9, np.int32),
                                  "is_signal": a(10, bool), "status": a(11, np.int32)}, cnt, nev)
    vf = [v for ev in V for v in ev]
    b = lambda i, dt: np.array([v[i] for v in vf], dtype=dt)  # noqa: E731
    mcv = Collection.from_counts({"x": b(0, float), "y": b(1, float), "z": b(2, float), "t": b(3, float),
                                  "type": b(4, np.int8), "collision": b(5, np.int32)}, [len(v) for v in V], nev)
    cf = [c for ev in CO for c in ev]
    colls = Collection.from_counts({"x": np.array([c[0] for c in cf]), "y": np.array([c[1] for c in cf]),
                                    "z": np.array([c[2] for c in cf]), "t": np.zeros(len(cf)),
                                    "collision": np.concatenate([np.arange(len(ev)) for ev in CO]).astype(np.int32)},
                                   [len(ev) for ev in CO], nev)
    header = Collection.per_event({"n_collisions": np.array([h[0] for h in H], np.int32),
                                   "ntracks_override": np.array([h[1] for h in H], np.int32),
                                   "signal_trials": np.array([h[2] for h in H], np.int32)}, nev)
    tf = [t for ev in T for t in ev]
    nt = len(tf)
    tc = {"mc_index": np.array([t[0] for t in tf], np.int32), "type": np.array([t[1] for t in tf], np.int8)}
    for j, k in enumerate(("x", "y", "tx", "ty", "qop")):
        tc[k] = np.array([t[2 + j] for t in tf], float)
    tc["z"] = np.array([t[7] for t in tf], float)
    tc["charge"] = np.array([t[8] for t in tf], np.int8)
    tc["p"] = np.abs(1.0 / tc["qop"]) if nt else np.zeros(0)
    tc["chi2PerDoF"] = (1.0 + 0.3 * rng.normal(size=nt) ** 2).astype(np.float32)
    tc["ndof"] = np.full(nt, 20, np.int32)
    tc["ghostProb"] = (0.05 * rng.uniform(size=nt)).astype(np.float32)
    tc["cov"] = np.array([t[9] for t in tf]).reshape(nt, 5, 5)
    tracks = Collection.from_counts(tc, [len(ev) for ev in T], nev)
    isk = np.array([t[10] for t in tf], bool)
    ismu = np.array([t[11] for t in tf], bool)
    isp = np.array([t[12] for t in tf], bool)
    pp = {}
    pp["PIDK"] = np.where(isk, 12.0, -12.0) + 5 * rng.normal(size=nt)
    pp["PIDp"] = np.where(isp, 12.0, -8.0) + 5 * rng.normal(size=nt)
    pp["PIDe"] = -5.0 + 3 * rng.normal(size=nt)
    pp["PIDmu"] = np.where(ismu, 8.0, -6.0) + 3 * rng.normal(size=nt)
    for k, flag in (("k", isk), ("mu", ismu), ("p", isp)):
        pp[f"ProbNN{k}"] = np.clip(np.where(flag, 0.9, 0.05) + 0.05 * rng.normal(size=nt), 0, 1)
    pp["ProbNNpi"] = np.clip(np.where(~(isk | ismu | isp), 0.9, 0.05) + 0.05 * rng.normal(size=nt), 0, 1)
    pp["ProbNNe"] = np.full(nt, 0.01)
    pp["ProbNNghost"] = np.full(nt, 0.02)
    pp = {k: v.astype(np.float32) for k, v in pp.items()}
    for k in ("RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp", "MuonMuLL", "MuonBkgLL"):
        pp[k] = np.zeros(nt, np.float32)
    pp["isMuon"] = ismu & (rng.uniform(size=nt) < 0.97)
    pp["hasRich"] = np.ones(nt, bool)
    pp["InMuonAcc"] = np.ones(nt, bool)
    protos = Collection.from_counts(pp, tracks.counts, nev)
    pf = [v for ev in PV for v in ev]
    pvs = Collection.from_counts({"x": np.array([v[0][0] for v in pf]), "y": np.array([v[0][1] for v in pf]),
                                  "z": np.array([v[0][2] for v in pf]),
                                  "cov": np.array([v[1] for v in pf]).reshape(len(pf), 3, 3),
                                  "collision": np.array([v[2] for v in pf], np.int32)}, [len(ev) for ev in PV], nev)
    summary = Collection.per_event({"nTracks": tracks.counts.astype(np.int32),
                                    "nLongTracks": tracks.counts.astype(np.int32),
                                    "nUpstreamTracks": np.zeros(n, np.int32), "nDownstreamTracks": np.zeros(n, np.int32),
                                    "nPVs": pvs.counts.astype(np.int32)}, nev)
    return {"Header": header, "Collisions": colls, "MCVertices": mcv, "MCParticles": mcp, "Tracks": tracks,
            "Vertices": pvs, "ProtoParticles": protos, "Summary": summary}


class SynthEvents(Algorithm):
    """Test producer: synthetic B+ -> J/psi K+ events (all event-store inputs of the analysis)."""

    SignalFraction = Property(float, 1.0, "fraction of events with a signal decay")
    Collisions = Property(int, 1, "collisions per event")
    Prompt = Property(list, [3, 10], "min/max prompt hadrons per collision", item_type=int)
    Header = Output("/Event/Gen/Header", "")
    GenCollisions = Output("/Event/Gen/Collisions", "")
    MCVertices = Output("/Event/MC/Vertices", "")
    MCParticles = Output("/Event/MC/Particles", "")
    Tracks = Output("/Event/Rec/Tracks", "")
    Vertices = Output("/Event/Rec/Vertices", "")
    ProtoParticles = Output("/Event/Rec/ProtoParticles", "")
    Summary = Output("/Event/Rec/Summary", "")

    def execute(self, ctx):
        out = {}
        # one generator call per event keyed by the event number: independent of batching
        parts = [make_events(1, seed=int(e) + 1000, signal_fraction=self.SignalFraction, n_prompt=tuple(self.Prompt),
                             n_collisions=self.Collisions) for e in ctx.event_numbers]
        for key in parts[0]:
            c = Collection.concat([p[key] for p in parts])
            out["GenCollisions" if key == "Collisions" else key] = Collection(c.columns, c.offsets)
        return out


class AnalysisTestPlugin:
    __name__ = "analysis_test_plugin"

    @hookimpl
    def flashsim_register_components(self, registry):
        from algorithms.analysis.combiner import CombineParticles
        from algorithms.analysis.particles import MakeNoPIDParticles, MakeParticles
        from algorithms.analysis.tuples import DecayTreeTuple, MCDecayTreeTuple

        for cls in (SynthEvents, MakeParticles, MakeNoPIDParticles, CombineParticles, DecayTreeTuple,
                    MCDecayTreeTuple):
            registry.add_algorithm(cls)


PLUGIN = AnalysisTestPlugin()
