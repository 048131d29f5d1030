"""MC truth: BKGCAT on constructed events (DaVinci's categories), true-kinematics columns."""
import numpy as np
import pytest

from algorithms.analysis.kinematics import pdg_mass
from algorithms.analysis.particles import Topology
from algorithms.analysis.truth import MCTruthIndex, background_category, candidate_truth, true_columns
from framework import Collection

C = 299.792458


class Event:
    """Hand-made MC truth of one event."""

    def __init__(self):
        self.p, self.v = [], []

    def vertex(self, pos, typ=2, coll=0):
        self.v.append((*pos, 0.0, typ, coll))
        return len(self.v) - 1

    def add(self, pid, p3, ov, mother=-1, coll=0, decay_at=None, signal=False):
        m = pdg_mass(abs(pid))
        E = float(np.sqrt(np.dot(p3, p3) + m * m))
        ev = self.vertex(decay_at, 2, coll) if decay_at is not None else -1
        self.p.append((pid, *p3, E, m, ov, ev, mother, coll, signal))
        return len(self.p) - 1

    def collections(self):
        P = np.array(self.p, dtype=object)
        cols = {"pid": P[:, 0].astype(np.int32), "px": P[:, 1].astype(float), "py": P[:, 2].astype(float),
                "pz": P[:, 3].astype(float), "E": P[:, 4].astype(float), "mass": P[:, 5].astype(float),
                "origin_vertex": P[:, 6].astype(np.int32), "end_vertex": P[:, 7].astype(np.int32),
                "mother": P[:, 8].astype(np.int32), "collision": P[:, 9].astype(np.int32),
                "is_signal": P[:, 10].astype(bool), "status": np.ones(len(P), np.int32)}
        V = np.array(self.v, dtype=float)
        vcols = {"x": V[:, 0], "y": V[:, 1], "z": V[:, 2], "t": V[:, 3], "type": V[:, 4].astype(np.int8),
                 "collision": V[:, 5].astype(np.int32)}
        return Collection.from_counts(cols, [len(P)], [7]), Collection.from_counts(vcols, [len(V)], [7])


def build():
    e = Event()
    pv0 = e.vertex((0.0, 0.0, 0.0), 1, 0)
    pv1 = e.vertex((0.0, 0.0, 30.0), 1, 1)
    idx = {}
    # signal B+ -> J/psi(mu+ mu-) K+
    sv = (1.0, 0.5, 10.0)
    idx["B"] = e.add(521, (1000.0, 500.0, 50000.0), pv0, decay_at=sv, signal=True)
    vb = e.p[idx["B"]][7]
    idx["Jpsi"] = e.add(443, (600.0, 300.0, 30000.0), vb, idx["B"], decay_at=sv)
    vj = e.p[idx["Jpsi"]][7]
    idx["K"] = e.add(321, (400.0, 200.0, 20000.0), vb, idx["B"])
    idx["mup"] = e.add(-13, (300.0, 100.0, 15000.0), vj, idx["Jpsi"])
    idx["mum"] = e.add(13, (300.0, 200.0, 15000.0), vj, idx["Jpsi"])
    # B0 -> K+ pi- (for the K <-> pi reflection)
    idx["B0"] = e.add(511, (0.0, 800.0, 40000.0), pv0, decay_at=(0.5, 1.0, 8.0))
    vb0 = e.p[idx["B0"]][7]
    idx["B0_K"] = e.add(321, (0.0, 500.0, 20000.0), vb0, idx["B0"])
    idx["B0_pi"] = e.add(-211, (0.0, 300.0, 20000.0), vb0, idx["B0"])
    # B+ -> J/psi K*+(K+ pi0): partially reconstructed when the pi0 is missed
    idx["B2"] = e.add(521, (500.0, 0.0, 30000.0), pv0, decay_at=(0.3, 0.0, 6.0))
    vb2 = e.p[idx["B2"]][7]
    idx["B2_Jpsi"] = e.add(443, (300.0, 0.0, 15000.0), vb2, idx["B2"], decay_at=e.v[vb2][:3])
    vj2 = e.p[idx["B2_Jpsi"]][7]
    idx["B2_mup"] = e.add(-13, (150.0, 0.0, 7000.0), vj2, idx["B2_Jpsi"])
    idx["B2_mum"] = e.add(13, (150.0, 10.0, 8000.0), vj2, idx["B2_Jpsi"])
    idx["B2_Kst"] = e.add(323, (200.0, 0.0, 15000.0), vb2, idx["B2"], decay_at=e.v[vb2][:3])
    vk = e.p[idx["B2_Kst"]][7]
    idx["B2_K"] = e.add(321, (150.0, 0.0, 10000.0), vk, idx["B2_Kst"])
    idx["B2_pi0"] = e.add(111, (50.0, 0.0, 5000.0), vk, idx["B2_Kst"])
    # Lambda_b0 -> Lambda_c+ (p K- pi+) mu- anti-nu_mu
    idx["Lb"] = e.add(5122, (0.0, -900.0, 60000.0), pv0, decay_at=(0.0, -1.0, 12.0))
    vlb = e.p[idx["Lb"]][7]
    idx["Lc"] = e.add(4122, (0.0, -500.0, 35000.0), vlb, idx["Lb"], decay_at=(0.0, -1.1, 13.0))
    vlc = e.p[idx["Lc"]][7]
    idx["Lc_p"] = e.add(2212, (0.0, -200.0, 15000.0), vlc, idx["Lc"])
    idx["Lc_K"] = e.add(-321, (0.0, -150.0, 10000.0), vlc, idx["Lc"])
    idx["Lc_pi"] = e.add(211, (0.0, -150.0, 10000.0), vlc, idx["Lc"])
    idx["Lb_mu"] = e.add(13, (0.0, -300.0, 15000.0), vlb, idx["Lb"])
    idx["Lb_nu"] = e.add(-14, (0.0, -100.0, 10000.0), vlb, idx["Lb"])
    # prompt tracks in collision 0 and 1; a D+ -> K- pi+ pi+ and a KS0 -> pi+ pi- (not from the PV)
    idx["pi0p"] = e.add(211, (100.0, 100.0, 5000.0), pv0)
    idx["pi0m"] = e.add(-211, (-100.0, 100.0, 5000.0), pv0)
    idx["K0p"] = e.add(321, (-100.0, -100.0, 5000.0), pv0)
    idx["K1p"] = e.add(321, (100.0, -100.0, 5000.0), pv1, coll=1)
    idx["D"] = e.add(411, (0.0, 300.0, 20000.0), pv0, decay_at=(0.0, 0.1, 3.0))
    vd = e.p[idx["D"]][7]
    idx["D_K"] = e.add(-321, (0.0, 100.0, 7000.0), vd, idx["D"])
    idx["D_pi1"] = e.add(211, (0.0, 100.0, 7000.0), vd, idx["D"])
    idx["D_pi2"] = e.add(211, (0.0, 100.0, 6000.0), vd, idx["D"])
    idx["KS"] = e.add(310, (0.0, -300.0, 20000.0), pv0, decay_at=(0.0, -10.0, 300.0))
    vks = e.p[idx["KS"]][7]
    idx["KS_pip"] = e.add(211, (0.0, -150.0, 10000.0), vks, idx["KS"])
    idx["KS_pim"] = e.add(-211, (0.0, -150.0, 10000.0), vks, idx["KS"])
    mcp, mcv = e.collections()
    return MCTruthIndex(mcp, mcv), idx


@pytest.fixture(scope="module")
def truth():
    return build()


def cat(truth, names, reco_pids, head_pid, **kw):
    t, idx = truth
    rows = np.array([[idx[n] for n in names]])
    reco_sum = sum(abs(p) for p in reco_pids) if "reco_sum" not in kw else kw.pop("reco_sum")
    c, common = background_category(t, rows, np.array([reco_pids]), [head_pid], reco_sum,
                                    pdg_mass(abs(head_pid)), **kw)
    return int(c[0]), int(common[0])


def test_signal_and_intermediate(truth):
    t, idx = truth
    # B+ -> (J/psi -> mu+ mu-) K+ : reconstructed descendants J/psi, mu+, mu-, K+
    c, common = cat(truth, ["mup", "mum", "K"], [-13, 13, 321], 521, reco_sum=443 + 13 + 13 + 321)
    assert (c, common) == (0, idx["B"])
    c, common = cat(truth, ["mup", "mum"], [-13, 13], 443)
    assert (c, common) == (0, idx["Jpsi"])


def test_quasi_signal_and_fully_reco_background(truth):
    # B+ -> mu+ mu- K+ without the J/psi in the reconstructed tree: a resonance missed
    assert cat(truth, ["mup", "mum", "K"], [-13, 13, 321], 521)[0] == 10
    # right decay products, wrong mother hypothesis (B_c+)
    assert cat(truth, ["mup", "mum", "K"], [-13, 13, 321], 541, reco_sum=443 + 13 + 13 + 321)[0] == 20


def test_reflection_k_pi_swap(truth):
    # B0 -> K+ pi- reconstructed with K <-> pi swapped (as anti-B0 -> K- pi+... i.e. pi+ and K-)
    c, common = cat(truth, ["B0_K", "B0_pi"], [211, -321], -511)
    assert c == 30
    assert cat(truth, ["B0_K", "B0_pi"], [321, -211], 511)[0] == 0


def test_partially_reconstructed_and_low_mass(truth):
    # B+ -> J/psi K*+(K+ pi0) reconstructed as B+ -> J/psi K+ (pi0 missed): low-mass background
    c, common = cat(truth, ["B2_mup", "B2_mum", "B2_K"], [-13, 13, 321], 521, reco_sum=443 + 13 + 13 + 321)
    assert c == 50
    # same, with the kaon taken as a pion: partially reconstructed (not 'correctly identified')
    assert cat(truth, ["B2_mup", "B2_mum", "B2_K"], [-13, 13, 211], 521, reco_sum=443 + 13 + 13 + 211)[0] == 40
    # semileptonic Lambda_b0 -> Lambda_c+ mu- nu: 50 by default, signal with SemileptonicDecay
    names = ["Lc_p", "Lc_K", "Lc_pi", "Lb_mu"]
    pids = [2212, -321, 211, 13]
    rs = 4122 + 2212 + 321 + 211 + 13
    assert cat(truth, names, pids, 5122, reco_sum=rs)[0] == 50
    assert cat(truth, names, pids, 5122, reco_sum=rs, semileptonic=True, num_neutrinos=1)[0] == 0


def test_combinatorial_categories(truth):
    # pile-up: J/psi muons (collision 0) + a kaon from collision 1
    assert cat(truth, ["mup", "mum", "K1p"], [-13, 13, 321], 521)[0] == 100
    # all from the same PV
    assert cat(truth, ["pi0p", "pi0m", "K0p"], [211, -211, 321], 521)[0] == 80
    # some from the PV (signal muons + a prompt kaon)
    assert cat(truth, ["mup", "mum", "K0p"], [-13, 13, 321], 521)[0] == 70
    # displaced, from two different b hadrons
    assert cat(truth, ["mup", "B0_pi"], [-13, -211], 443)[0] == 110
    # displaced, charm and strange
    assert cat(truth, ["D_K", "KS_pip"], [-321, 211], 421)[0] == 120
    assert cat(truth, ["KS_pip", "Lb_mu"], [211, 13], 443)[0] == 110
    assert cat(truth, ["KS_pip", "KS_pim", "D_pi1"], [211, -211, 211], 411)[0] == 120


def test_ghost_category(truth):
    t, idx = truth
    c, _ = background_category(t, np.array([[idx["mup"], -1]]), np.array([[-13, 13]]), [443], 26, 3096.9)
    assert c[0] == 60


def test_candidate_truth_and_true_columns(truth):
    t, idx = truth
    top = Topology.combine(521, "B+", [Topology.combine(443, "J/psi(1S)", [Topology.basic_particle(-13, "mu+"),
                                                                          Topology.basic_particle(13, "mu-")]),
                                      Topology.basic_particle(321, "K+")])
    mc = np.array([[-1, -1, idx["mup"], idx["mum"], idx["K"]], [-1, -1, idx["mup"], idx["mum"], idx["K0p"]]], np.int32)
    pid = np.array([[521, 443, -13, 13, 321]] * 2, np.int32)
    cands = Collection.from_counts({"nodes_mc": mc, "nodes_pid": pid}, [2])
    res = candidate_truth(t, cands, top)
    assert list(res["bkgcat"][0]) == [0, 70] and list(res["bkgcat"][1]) == [0, 0]
    assert list(res["rows"][0]) == [idx["B"], idx["Jpsi"], idx["mup"], idx["mum"], idx["K"]]
    assert res["rows"][1, 0] == -1 and res["rows"][1, 1] == idx["Jpsi"]
    tc = true_columns(t, res["rows"][:, 0])
    assert list(tc["TRUEID"]) == [521, 0] and list(tc["MC_MOTHER_ID"]) == [0, 0]
    assert tc["TRUEP_Z"][0] == 50000.0 and tc["TRUEP_Z"][1] == 0.0
    # proper time of the B: |SV - PV| m / (p c)  [ns]
    L = np.sqrt(1.0 + 0.25 + 100.0)
    p = np.sqrt(1000.0**2 + 500.0**2 + 50000.0**2)
    assert tc["TRUETAU"][0] == pytest.approx(L * pdg_mass(521) / (p * C))
    assert tc["TRUETAU"][1] == -1.0
    assert (tc["TRUEENDVERTEX_Z"][0], tc["TRUEORIGINVERTEX_Z"][0]) == (10.0, 0.0)
    tk = true_columns(t, res["rows"][:, 4])
    assert list(tk["TRUEID"]) == [321, 321] and list(tk["MC_MOTHER_ID"]) == [521, 0]
    assert tk["MC_MOTHER_KEY"][0] == idx["B"] and np.isnan(tk["TRUEENDVERTEX_X"][0])
    assert tk["TRUETAU"][0] == -1.0
