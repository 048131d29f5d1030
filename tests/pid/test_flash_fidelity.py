"""Flash PID vs the reference detector (teacher) on a fresh held-out sample generated here:
epsilon(DLLK > 0) of K and pi, isMuon of mu and pi, integrated and in momentum bins, within
statistical tolerances (plus a small model allowance), and the classifier two-sample AUC of the
joint outputs.  Reference detector (teacher), not LHCb data.

If the teacher's constants were retuned after the models were trained, retrain them
(python -m models.training.pid.train_flash_pid --input teacher.root) before reading a failure here
as a model problem."""
import math
from pathlib import Path

import numpy as np
import pytest

from algorithms.pid.features import LAMARR_OUTPUTS, MODEL_KINDS, SPECIES
from algorithms.pid.flash import flash_pid_response
from framework.models import ModelSvc
from framework.random import RandomStreams

REPO = Path(__file__).resolve().parents[2]
N = 20_000
FIRST_ROW = 7_000_000_000      # rows never used by the training samples (they start at 0)
# the issue's target AUC <= 0.55 per species (eighth issue-6 round, this test: pi 0.516, K 0.526, p 0.515, e 0.521,
# mu 0.515; fourth round pi 0.534, mu 0.516, K 0.534, e 0.525, p 0.532; the third retraining gave pi 0.565, mu 0.566;
# the 2D MUON flow gave mu 0.646, and the models before the GlobalPID rework pi 0.66 and mu 0.89)
AUC_TARGET = 0.55
# GlobalPID on the teacher's own inputs (measured, fourth issue-6 retraining: PIDmu 99 % quantile of |diff|
# 0.004 mu, 0.079 K, 0.096 pi; ProbNN |log flash - log teacher| median <= 0.0075 (the third retraining's
# models: largest column median 0.014 K, 0.015 mu, 0.016 pi), 99 % quantile <= 2.4, except ProbNNmu
# of the rare isMuon hadrons (3 %): median 0.12 K, 0.09 pi; the GlobalPID before issue 6 had a logit bias of
# -2.4 on average for the muons' ProbNNp)
PIDMU_Q99_MAX = 0.3
PROBNN_DLOG_MEDIAN_MAX = 0.012
PROBNN_DLOG_MEDIAN_MAX_ISMUON_HADRONS = 0.3
PROBNN_DLOG_Q99_MAX = 3.0


def load(species):
    paths = {k: REPO / "models" / f"pid2016_{k}_{species}.onnx" for k in MODEL_KINDS}
    if not all(p.is_file() for p in paths.values()):
        pytest.skip("flash PID models not trained yet (python -m models.training.pid.train_flash_pid)")
    svc = ModelSvc(threads=1, conditions_tag="2016-MagUp-13TeV")
    return {k: svc.load(str(p)) for k, p in paths.items()}


_CACHE = {}


def samples(species):
    """(teacher outputs, flash outputs, kinematics) for N fresh tracks of one species."""
    if species in _CACHE:
        return _CACHE[species]
    from algorithms.pid.teacher import teacher_response
    from algorithms.pid.teacher.sampling import sample_tracks

    si = SPECIES.index(species)
    s = sample_tracks(N, species, seed=4242, first_row=FIRST_ROW + si * N)
    key = RandomStreams(4242, 0, "PIDTeacherTest").key_for(0)
    t = teacher_response(s["pid"], s["p"], s["x"], s["y"], s["z"], s["tx"], s["ty"], s["charge"], s["nTracks"],
                         s["prod_z"], s["event"], s["index"], key, eta=s["eta"])
    keys = {k: RandomStreams(99, 0, "FlashPIDTest").key_for(i) for i, k in enumerate(MODEL_KINDS)}
    f = flash_pid_response({si: load(species)}, np.full(N, si), s["p"], s["eta"], s["nTracks"], s["charge"],
                           s["event"], s["index"], keys)
    t = dict(t)
    t["ProbNNmu"] = np.where(t["isMuon"], t["ProbNNmu"], -1.0)
    _CACHE[species] = (t, f, s)
    return _CACHE[species]


def check_rate(ref, gen, what, allowance_abs=0.0, allowance_rel=0.0, nsig=3.0):
    r, g = float(np.mean(ref)), float(np.mean(gen))
    sigma = math.sqrt((r * (1 - r) + g * (1 - g)) / len(ref) + 1e-12)
    tol = nsig * sigma + allowance_abs + allowance_rel * r
    assert abs(g - r) <= tol, f"{what}: flash {g:.4f} vs teacher {r:.4f} (|diff| {abs(g - r):.4f} > {tol:.4f})"


# efficiencies (> 20 %): within 3 sigma + 1 % absolute (the issue's criterion); mis-ID rates
# (< 20 %): within 3 sigma + 10 % relative
@pytest.mark.parametrize("species,cut,kind", [
    ("K", "PIDK>0", "eff"), ("pi", "PIDK>0", "misid"), ("mu", "isMuon", "eff"), ("pi", "isMuon", "misid"),
])
def test_rates_integrated_and_in_momentum_bins(species, cut, kind):
    t, f, s = samples(species)
    fn = {"PIDK>0": lambda o: np.asarray(o["RichDLLK"]) > 0, "isMuon": lambda o: np.asarray(o["isMuon"], bool)}[cut]
    allow = dict(allowance_abs=0.01) if kind == "eff" else dict(allowance_rel=0.10)
    check_rate(fn(t), fn(f), f"{species} {cut} (all)", **allow)
    edges = np.array([2.0, 6.0, 15.0, 40.0, 200.0]) * 1000
    b = np.searchsorted(edges, s["p"], side="right") - 1
    for i in range(len(edges) - 1):
        m = b == i
        if m.sum() > 500:
            check_rate(fn(t)[m], fn(f)[m], f"{species} {cut} p in [{edges[i] / 1e3:g}, {edges[i + 1] / 1e3:g}] GeV", **allow)


def test_rich_dll_distributions_ks():
    from framework.validation import ks_test

    t, f, _ = samples("K")
    for c in ("RichDLLK", "RichDLLp"):
        mt, mf = t["hasRich"], f["hasRich"]
        r = ks_test(t[c][mt], f[c][mf])
        assert r.statistic < 0.03, f"K {c}: KS distance {r.statistic:.4f}"


@pytest.mark.parametrize("species", ["e", "mu", "pi", "K", "p"])
def test_rich_dllp_equals_dllk_point_mass_in_momentum_bins(species):
    """The fraction of hasRich tracks with DLLp == DLLK exactly (K and p both below their Cherenkov
    thresholds: all tracks below ~9 GeV, ~3 % up to ~17 GeV, none above) in momentum bins, flash vs
    teacher: within 3 sigma + 1 % absolute.  Before the RICH recalibration (issue 6) the flows put 90-95 %
    of the tracks below 9 GeV and 2-25 % above 17 GeV at the tie (held-out rows, all species)."""
    t, f, s = samples(species)
    mt, mf = np.asarray(t["hasRich"], bool), np.asarray(f["hasRich"], bool)
    tie = lambda o: np.asarray(o["RichDLLp"]) == np.asarray(o["RichDLLK"])  # noqa: E731
    edges = np.array([2.0, 5.0, 9.0, 10.0, 20.0, 50.0, 200.0]) * 1000
    b = np.searchsorted(edges, s["p"], side="right") - 1
    for i in [None] + list(range(len(edges) - 1)):
        m = np.ones(N, bool) if i is None else b == i
        if m.sum() < 500:
            continue
        r, g = tie(t)[m & mt], tie(f)[m & mf]
        what = "all" if i is None else f"p in [{edges[i] / 1e3:g}, {edges[i + 1] / 1e3:g}] GeV"
        fr, fg = float(r.mean()), float(g.mean())
        sigma = math.sqrt(fr * (1 - fr) / r.size + fg * (1 - fg) / g.size)
        assert abs(fg - fr) <= 3 * sigma + 0.01, \
            f"{species} DLLp == DLLK, {what}: flash {fg:.4f} vs teacher {fr:.4f} (tolerance {3 * sigma + 0.01:.4f})"
    # the tie survives into the combined DLLs exactly
    both = mf & tie(f)
    assert np.all(np.asarray(f["PIDp"])[both] == np.asarray(f["PIDK"])[both])


def _joint_auc(species):
    from framework.validation import classifier_two_sample_auc

    t, f, s = samples(species)
    cols = list(LAMARR_OUTPUTS) + ["isMuon", "hasRich", "InMuonAcc"]
    # teacher and flash on disjoint halves: with the same condition rows in both samples the
    # cross-validated classifier memorises twins and the AUC is biased low
    ha, hb = np.arange(0, N, 2), np.arange(1, N, 2)
    J = np.stack([np.asarray(t[c], np.float64)[ha] for c in cols], 1)
    G = np.stack([np.asarray(f[c], np.float64)[hb] for c in cols], 1)
    cond = np.stack([np.log(s["p"]), s["eta"], s["nTracks"], s["charge"]], 1)
    return classifier_two_sample_auc(J, G, conditions=(cond[ha], cond[hb]), seed=3, n_folds=2, max_rows=10_000,
                                     max_iter=50).auc


@pytest.mark.parametrize("species", ["e", "mu", "pi", "K", "p"])
def test_joint_outputs_two_sample_auc_issue_target(species):
    """The issue's target, AUC <= 0.55 per species on the joint outputs, on fresh tracks with a lighter classifier
    than the cards' (card figures, eighth round: e 0.541, mu 0.543, pi 0.536, K 0.542, p 0.528); also catches a
    broken or stale model (e.g. a retuned teacher)."""
    auc = _joint_auc(species)
    assert auc <= AUC_TARGET, f"{species} joint outputs: two-sample AUC {auc:.3f}"


def test_muon_pairs_lie_on_the_teachers_curves():
    """mu: the teacher's (MuonMuLL, MuonBkgLL) pairs lie on a few curves (one per number of stations with
    hits).  The flash pairs must lie on the curves of the teacher's pairs, found in the fresh teacher sample
    by the training's own curve finder (measured: 99.8 % within 0.01; the previous 2D flow: 81 %), and the
    MUON block two-sample AUC must be near 0.5 (measured 0.494 +- 0.004; the 2D flow: 0.618)."""
    from framework.validation import classifier_two_sample_auc
    from models.training.pid.flash_common import find_muon_curves

    t, f, s = samples("mu")
    mt, mf = np.asarray(t["isMuon"], bool), np.asarray(f["isMuon"], bool)
    cur = find_muon_curves(t["MuonMuLL"][mt], t["MuonBkgLL"][mt])
    st = np.asarray(t["MuonMuLL"], np.float64)[mt] - t["MuonBkgLL"][mt]
    bt = np.asarray(t["MuonBkgLL"], np.float64)[mt]
    sf = np.asarray(f["MuonMuLL"], np.float64)[mf] - f["MuonBkgLL"][mf]
    bf = np.asarray(f["MuonBkgLL"], np.float64)[mf]
    res = np.full(sf.size, np.inf)
    for c in range(cur["n_curves"]):
        m = cur["labels"] == c
        o = np.argsort(st[m])
        x, y = st[m][o], bt[m][o]
        inside = (sf >= x[0]) & (sf <= x[-1])
        res[inside] = np.minimum(res[inside], np.abs(bf[inside] - np.interp(sf[inside], x, y)))
    assert np.mean(res < 0.01) > 0.99, f"mu: only {np.mean(res < 0.01):.4f} of the flash muon LL pairs on a teacher curve"
    ha, hb = np.arange(0, N, 2), np.arange(1, N, 2)
    cond = np.stack([np.log(s["p"]), s["eta"], s["nTracks"], s["charge"]], 1)
    A = np.stack([t["MuonMuLL"], t["MuonBkgLL"]], 1).astype(np.float64)[ha][mt[ha]]
    B = np.stack([f["MuonMuLL"], f["MuonBkgLL"]], 1).astype(np.float64)[hb][mf[hb]]
    auc = classifier_two_sample_auc(A, B, conditions=(cond[ha][mt[ha]], cond[hb][mf[hb]]), seed=3, n_folds=2,
                                    max_rows=10_000, max_iter=50).auc
    assert auc < 0.54, f"mu MUON block: two-sample AUC {auc:.3f}"


def _globalpid_on_teacher_inputs(species):
    """The flash GlobalPID model run on the teacher's own sub-detector outputs and flags (fresh sample)."""
    from algorithms.pid.features import GLOBALPID_OUTPUTS, globalpid_features, kinematic_features
    from algorithms.pid.flash import draw_normal

    t, _, s = samples(species)
    kin = kinematic_features(s["p"], s["eta"], s["nTracks"], s["charge"])
    rich = np.stack([t[c] for c in ("RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp")], 1)
    muon = np.stack([t["MuonMuLL"], t["MuonBkgLL"]], 1)
    gx = globalpid_features(kin, rich, t["isMuon"], muon, t["hasRich"], t["InMuonAcc"])
    key = RandomStreams(99, 0, "FlashPIDTest").key_for(7)
    y = load(species)["globalpid"].run(gx, draw_normal(key, s["event"], s["index"], len(GLOBALPID_OUTPUTS)))
    return {c: y[:, j].astype(np.float64) for j, (c, _, _) in enumerate(GLOBALPID_OUTPUTS)}, t, gx


@pytest.mark.parametrize("species", ["mu", "K", "pi"])
def test_globalpid_reproduces_the_teacher_functions(species):
    """Given the teacher's sub-detector outputs, the teacher's combined DLLs and ProbNN are deterministic:
    PIDe/K/p must be the exact sub-detector sums, PIDmu close (a log-p table for non-isMuon tracks), and
    every ProbNN (including a muon's ProbNNp ~ 1e-7) close in log space."""
    g, t, gx = _globalpid_on_teacher_inputs(species)
    for c in ("PIDe", "PIDK", "PIDp"):
        ref = np.asarray(t[c], np.float32).astype(np.float64)
        assert np.max(np.abs(g[c] - ref) / (1 + np.abs(ref))) < 1e-5, f"{species} {c}: not the exact RICH sum"
    dmu = np.abs(g["PIDmu"] - np.asarray(t["PIDmu"]))
    ism = np.asarray(t["isMuon"], bool)
    assert np.max(dmu[ism] / (1 + np.abs(np.asarray(t["PIDmu"])[ism]))) < 1e-4, f"{species} PIDmu of isMuon tracks"
    assert np.quantile(dmu, 0.99) < PIDMU_Q99_MAX, f"{species} PIDmu: 99 % quantile of |diff| {np.quantile(dmu, 0.99):.3f}"
    for c in ("ProbNNe", "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp"):
        m = ism if c == "ProbNNmu" else np.ones(ism.size, bool)   # t: Lamarr sentinel -1 without isMuon
        dl = np.abs(np.log(np.clip(g[c][m], 1e-30, 1)) - np.log(np.clip(np.asarray(t[c])[m], 1e-30, 1)))
        med, q99 = float(np.median(dl)), float(np.quantile(dl, 0.99))
        med_max = PROBNN_DLOG_MEDIAN_MAX_ISMUON_HADRONS if (c == "ProbNNmu" and species != "mu") else PROBNN_DLOG_MEDIAN_MAX
        assert med < med_max and q99 < PROBNN_DLOG_Q99_MAX, \
            f"{species} {c}: |log flash - log teacher| median {med:.3f}, 99 % quantile {q99:.3f}"


def test_electron_ismuon_follows_the_step_at_10_gev():
    """IsMuon needs M2-M5 above 10 GeV, M2, M3 and M4 or M5 at 6-10 GeV, M2 and M3 at 3-6 GeV, so a non-muon's
    isMuon (random hits in every required station) drops by a factor ~6 at 10 GeV.  The shipped electron
    classifier (with the p > 3, 6, 10 GeV features since issue 6's thirteenth round) gives the teacher's rate on
    both sides of the steps, in narrow momentum bins of 600k fresh teacher electrons: within 3 sigma of the
    teacher's binomial error plus 5 % of the rate.  The classifier before the features gave 0.0078 at 10-12 GeV
    against the teacher's 0.0041 +- 0.0003 (12 sigma), spreading the step over the neighbouring momenta."""
    from algorithms.pid.features import encode_classes
    from models.training.pid.flash_common import teacher_global_rows

    r = teacher_global_rows("e", 600_000, first_row=9_500_000_000)
    kin, is_mu = r["kin"], r["isMuon"].astype(bool)
    m = ModelSvc(threads=1).load(str(REPO / "models" / "pid2016_ismuon_e.onnx"))
    ismuon_classes = encode_classes(np.array([0, 1]), np.array([1, 1]), np.array([1, 1]))   # without / with RICH
    prob = m.run(kin.astype(np.float32))[:, ismuon_classes].sum(1)
    p = kin[:, 0] / 1e3
    for lo, hi in ((5, 6), (6, 7), (8, 10), (10, 12)):
        sel = (p >= lo) & (p < hi)
        t, f = is_mu[sel].mean(), prob[sel].mean()
        err = math.sqrt(t * (1 - t) / sel.sum())
        assert abs(f - t) <= 3 * err + 0.05 * t, (lo, hi, t, err, f)
