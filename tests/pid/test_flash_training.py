"""Training path of the flash PID models on a tiny PIDCalib-style sWeighted sample (branch names
mapped with --branches, one species per file, negative weights): runs, writes cards, and the
models load in the framework and give finite outputs."""
import numpy as np
import pytest
import yaml

from algorithms.pid.features import MODEL_KINDS
from framework.models import ModelSvc
from framework.random import RandomStreams

pytest.importorskip("torch")
uproot = pytest.importorskip("uproot")

CALIB = {"p": "probe_P", "eta": "probe_ETA", "nTracks": "nTracks", "charge": "probe_Q", "RichDLLe": "probe_RichDLLe",
         "RichDLLmu": "probe_RichDLLmu", "RichDLLK": "probe_RichDLLK", "RichDLLp": "probe_RichDLLp",
         "hasRich": "probe_hasRich", "isMuon": "probe_isMuon", "InMuonAcc": "probe_InMuonAcc",
         "MuonMuLL": "probe_MuonMuLL", "MuonBkgLL": "probe_MuonBkgLL", "PIDe": "probe_PIDe", "PIDmu": "probe_PIDmu",
         "PIDK": "probe_PIDK", "PIDp": "probe_PIDp", "ProbNNe": "probe_ProbNNe", "ProbNNmu": "probe_ProbNNmu",
         "ProbNNpi": "probe_ProbNNpi", "ProbNNk": "probe_ProbNNk", "ProbNNp": "probe_ProbNNp"}


def test_weighted_calibration_sample_trains_finite_models(tmp_path):
    from algorithms.pid.teacher import teacher_response
    from algorithms.pid.teacher.sampling import sample_tracks
    from models.training.pid.train_flash_pid import main

    n = 2500
    s = sample_tracks(n, "mu", seed=5, first_row=9_000_000_000)
    key = RandomStreams(5, 0, "PIDTeacherTest").key_for(0)
    t = teacher_response(s["pid"], s["p"], s["x"], s["y"], s["z"], s["tx"], s["ty"], s["charge"], s["nTracks"],
                         s["prod_z"], s["event"], s["index"], key, eta=s["eta"])
    rng = np.random.default_rng(0)
    # sWeights of a signal + background fit: signal ~1.1, a background-like component negative
    w = np.where(rng.random(n) < 0.85, rng.normal(1.15, 0.05, n), rng.normal(-0.3, 0.1, n))
    branches = {"probe_P": s["p"], "probe_ETA": s["eta"], "nTracks": s["nTracks"].astype(np.float32),
                "probe_Q": s["charge"].astype(np.int8), "probe_sWeight": w}
    for logical, branch in CALIB.items():
        if logical in t:
            v = np.asarray(t[logical])
            branches[branch] = v if v.dtype == np.bool_ else v.astype(np.float32)
    path = tmp_path / "calib_mu.root"
    with uproot.recreate(path) as f:
        f["DecayTree"] = branches
    out = tmp_path / "models"
    rc = main(["--input", str(path), "--tree", "DecayTree", "--species-name", "mu", "--weight-branch", "probe_sWeight",
               "--branches", ",".join(f"{k}={v}" for k, v in CALIB.items()), "--output-dir", str(out),
               "--seconds-clf", "1", "--seconds-rich", "1.5", "--seconds-muon", "1", "--seconds-global", "1",
               "--replicas", "1", "--prefix", "testpid"])
    assert rc == 0
    svc = ModelSvc(threads=1)
    x = np.stack([s["p"], s["eta"], s["nTracks"], s["charge"]], 1).astype(np.float32)[:200]
    for kind in MODEL_KINDS:
        card = yaml.safe_load((out / f"testpid_{kind}_mu.yaml").read_text())
        assert card["training"]["weights"] == "probe_sWeight"
        assert card["training"]["negative_weight_fraction"] > 0.05
        assert "not on LHCb data" in card["training"]["provenance"]
        m = svc.load(str(out / f"testpid_{kind}_mu.onnx"))
        xx = x if kind != "globalpid" else np.hstack([x, np.zeros((200, 9), np.float32)])
        noise = None if not m.noise_dim else np.random.default_rng(1).standard_normal((200, m.noise_dim)).astype(np.float32)
        y = m.run(xx, noise)
        assert np.all(np.isfinite(y)), kind
    v = card["validation"]
    assert "skipped" in str(v["c2st"]) and v["rates_all_bins"] > 0


# ------------------------------------------------------------------------------------------------
# GlobalPID model: structure (exact sub-detector sums, per-muon-state tables, softmax ProbNN) and
# distillation of a deterministic ProbNN-like function
# ------------------------------------------------------------------------------------------------
def _synthetic_globalpid(n, seed, softmax=True):
    """GlobalPID inputs/outputs with the teacher's structure: PIDx = RichDLLx*hasRich (+ for PIDmu
    the muon LL difference if isMuon, or a step function of p in acceptance without isMuon), ProbNN
    a fixed tanh-softmax function of the features."""
    from algorithms.pid.features import GLOBALPID_OUTPUTS, globalpid_features

    rng = np.random.default_rng(seed)
    p = np.exp(rng.uniform(np.log(2000.0), np.log(150000.0), n))
    kin = np.stack([p, rng.uniform(2, 5, n), rng.integers(3, 80, n), rng.choice([-1.0, 1.0], n)], 1)
    has = rng.random(n) < 0.9
    acc = rng.random(n) < 0.9
    ism = acc & (rng.random(n) < 0.3)
    rich = np.where(has[:, None], rng.normal(0, 20, (n, 4)), -1000.0)
    muon = np.where(ism[:, None], np.stack([rng.normal(-2, 1, n), rng.normal(-4, 1, n)], 1), -1000.0)
    gx = globalpid_features(kin, rich, ism, muon, has, acc)
    mterm = np.where(ism, muon[:, 0] - muon[:, 1], np.where(acc & (p > 3000), np.where(p > 10000, -4.0, -1.0), 0.0))
    r = np.where(has[:, None], rich, 0.0)
    feats = np.stack([np.sign(v) * np.log1p(np.abs(v)) for v in (r[:, 0], r[:, 1], r[:, 2], r[:, 3], mterm)]
                     + [np.log(p / 1000.0), kin[:, 1], has, ism], 1)
    w1 = np.random.default_rng(99).normal(0, 0.6, (feats.shape[1], 8))
    w2 = np.random.default_rng(98).normal(0, 2.0, (8, 5))
    z = np.tanh((feats - feats.mean(0)) / feats.std(0) @ w1) @ w2
    prob = np.exp(z - z.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    if not softmax:
        prob = prob * rng.uniform(0.7, 1.0, (n, 1))
    vals = {"PIDe": r[:, 0], "PIDK": r[:, 2], "PIDp": r[:, 3], "PIDmu": r[:, 1] + mterm, "ProbNNe": prob[:, 0],
            "ProbNNmu": prob[:, 1], "ProbNNpi": prob[:, 2], "ProbNNk": prob[:, 3], "ProbNNp": prob[:, 4],
            "ProbNNghost": np.zeros(n)}
    gy = np.stack([vals[c] for c, _, _ in GLOBALPID_OUTPUTS], 1).astype(np.float32)
    return gx, gy, {"p": p, "acc": acc, "ism": ism, "has": has}


def _net(prep, gx, softmax=None, hidden=32, norich_hidden=0):
    from models.training.pid.flash_common import kin_transform_np, make_modules

    kt = kin_transform_np(gx[:, :4])
    loc, scale = kt.mean(0), np.maximum(kt.std(0), 1e-3)
    return make_modules()["GlobalPIDNet"](loc, scale, float(gx[:, 2].mean()), float(gx[:, 2].std()), prep.r_mean,
                                          prep.r_std, prep.gates, prep.tables, prep.lo, prep.step,
                                          prep.const_mask.astype(np.float64), prep.const_value,
                                          softmax=prep.softmax if softmax is None else softmax, hidden=hidden,
                                          norich_hidden=norich_hidden)


def test_globalpid_prep_tables_gates_and_head_choice():
    from models.training.pid.flash_common import GlobalPIDPrep

    gx, gy, t = _synthetic_globalpid(20_000, 1)
    prep = GlobalPIDPrep(n_knots=256).fit(gx, gy, np.ones(len(gx)))
    assert prep.softmax
    # only PIDmu in acceptance without isMuon has a term beyond the sub-detector sum
    expect = np.zeros((4, 3))
    expect[3, 1] = 1
    assert np.array_equal(np.abs(prep.tables).max(2) > 0, expect > 0)
    r = prep.residual(gx, gy)
    st, _, lp = prep.split(gx)
    far = (st == 1) & (np.abs(t["p"] - 3000) > 60) & (np.abs(t["p"] - 10000) > 200)
    assert np.sqrt(np.mean(r[far, 3] ** 2)) < 0.02, "the log-p table does not reproduce the step function"
    assert np.all(r[st != 1] == 0) or np.abs(r[st != 1]).max() < 1e-4
    # ProbNN that do not sum to 1 (LHCb's separate networks): independent sigmoids
    gx2, gy2, _ = _synthetic_globalpid(5000, 2, softmax=False)
    assert not GlobalPIDPrep(n_knots=64).fit(gx2, gy2, np.ones(len(gx2))).softmax


@pytest.mark.parametrize("softmax", [True, False])
def test_globalpid_graph_keeps_exact_sums_and_probability_structure(softmax):
    import torch

    from algorithms.pid.features import GLOBALPID_OUTPUTS
    from models.training.pid.flash_common import GlobalPIDPrep

    gx, gy, t = _synthetic_globalpid(4000, 3)
    prep = GlobalPIDPrep(n_knots=128).fit(gx, gy, np.ones(len(gx)))
    net = _net(prep, gx, softmax=softmax)
    names = [c for c, _, _ in GLOBALPID_OUTPUTS]
    with torch.no_grad():
        y = net(torch.as_tensor(gx), torch.randn(len(gx), len(names))).numpy()
    # untrained network: every combined DLL without a learned term is still the exact sub-detector sum
    for c in ("PIDe", "PIDK", "PIDp"):
        assert np.array_equal(y[:, names.index(c)], gy[:, names.index(c)]), c
    m = t["ism"] | ~t["acc"]
    np.testing.assert_allclose(y[m, names.index("PIDmu")], gy[m, names.index("PIDmu")], atol=2e-5, rtol=1e-6)
    assert np.all(y[:, names.index("ProbNNghost")] == 0.0)
    s = y[:, [names.index(c) for c in ("ProbNNe", "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp")]].sum(1)
    if softmax:
        np.testing.assert_allclose(s, 1.0, atol=1e-5)
    else:
        assert np.abs(s - 1).max() > 0.05
    # the loss is finite in both modes
    r, p, lg = prep.targets(gx, gy)
    f = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    assert torch.isfinite(net.loss(f(gx), f(r), f(p), f(lg))).all()


def test_globalpid_distils_a_deterministic_probnn():
    """A fixed tanh-softmax 'teacher ProbNN' is learned to a small log-probability error (the untrained
    model is far off), so a deterministic teacher can be reproduced with a width -> ~0."""
    import torch

    from algorithms.pid.features import GLOBALPID_OUTPUTS
    from models.training.pid.flash_common import GlobalPIDPrep, train_weighted

    gx, gy, _ = _synthetic_globalpid(12_000, 4)
    prep = GlobalPIDPrep(n_knots=128).fit(gx[:10_000], gy[:10_000], np.ones(10_000))
    net = _net(prep, gx[:10_000], hidden=24)
    f = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    r, p, lg = (f(v) for v in prep.targets(gx, gy))
    x = f(gx)
    names = [c for c, _, _ in GLOBALPID_OUTPUTS]
    cols = [names.index(c) for c in ("ProbNNe", "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp")]

    def err():
        with torch.no_grad():
            y = net(x[10_000:], torch.zeros(2000, len(names))).numpy()
        return float(np.median(np.abs(np.log(y[:, cols]) - np.log(gy[10_000:, cols]))))

    before = err()
    tr = torch.arange(10_000)
    train_weighted(net, lambda idx: net.loss(x[tr[idx]], r[tr[idx]], p[tr[idx]], lg[tr[idx]]), 10_000, np.ones(10_000),
                   lambda: float(net.loss(x[10_000:], r[10_000:], p[10_000:], lg[10_000:]).mean()), seconds=1e9,
                   max_epochs=25, batch=256, lr=5e-3, log=None)
    after = err()
    assert before > 0.3 and after < 0.25 * before, (before, after)


def test_globalpid_norich_head_fixes_tracks_without_rich_and_leaves_the_others_bit_for_bit():
    """The no-RICH head (``norich_hidden``) starts at 0: a model warm-started from one without it gives the
    same outputs; trained alone on the rows without RICH, it cuts their ProbNN error (here the shared layer
    was fitted to the tracks with RICH only), and every track with RICH keeps its outputs bit for bit."""
    import torch

    from algorithms.pid.features import GLOBALPID_OUTPUTS
    from models.training.pid.flash_common import GlobalPIDPrep, train_weighted

    torch.manual_seed(5)
    gx, gy, t = _synthetic_globalpid(14_000, 5)
    prep = GlobalPIDPrep(n_knots=128).fit(gx, gy, np.ones(len(gx)))
    base = _net(prep, gx, hidden=24)
    f = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    r, p, lg = (f(v) for v in prep.targets(gx, gy))
    x = f(gx)
    names = [c for c, _, _ in GLOBALPID_OUTPUTS]
    cols = [names.index(c) for c in ("ProbNNe", "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp")]
    tr, va = np.arange(12_000), np.arange(12_000, 14_000)
    rich_tr, rv = torch.as_tensor(tr[t["has"][tr]]), torch.as_tensor(va[t["has"][va]])
    train_weighted(base, lambda idx: base.loss(x[rich_tr[idx]], r[rich_tr[idx]], p[rich_tr[idx]], lg[rich_tr[idx]]),
                   len(rich_tr), np.ones(len(rich_tr)), lambda: float(base.loss(x[rv], r[rv], p[rv], lg[rv]).mean()),
                   seconds=1e9, max_epochs=4, batch=256, lr=5e-3, log=None)
    head = _net(prep, gx, hidden=24, norich_hidden=12)
    missing, unexpected = head.load_state_dict(base.state_dict(), strict=False)
    assert sorted(missing) == ["norich.0.bias", "norich.0.weight", "norich.2.bias", "norich.2.weight"]
    assert not unexpected
    noise = torch.zeros(len(gx), len(names))
    with torch.no_grad():
        y0 = base(x, noise).numpy()
        assert np.array_equal(head(x, noise).numpy(), y0), "an untrained head must change nothing"

    def err(y, rows):   # mean absolute error of the probabilities
        return float(np.mean(np.abs(y[rows][:, cols] - gy[rows][:, cols])))

    nr_va = va[~t["has"][va]]
    before = err(y0, nr_va)
    for name, prm in head.named_parameters():
        prm.requires_grad_(name.startswith("norich."))
    nr_tr, nv = torch.as_tensor(tr[~t["has"][tr]]), torch.as_tensor(nr_va)
    train_weighted(head, lambda idx: head.loss(x[nr_tr[idx]], r[nr_tr[idx]], p[nr_tr[idx]], lg[nr_tr[idx]]),
                   len(nr_tr), np.ones(len(nr_tr)), lambda: float(head.loss(x[nv], r[nv], p[nv], lg[nv]).mean()),
                   seconds=1e9, max_epochs=100, batch=128, lr=1e-2, log=None)
    with torch.no_grad():
        y1 = head(x, noise).numpy()
    assert np.array_equal(y1[t["has"]], y0[t["has"]]), "tracks with RICH must keep their outputs"
    after = err(y1, nr_va)
    assert before > 0.05 and after < 0.5 * before, (before, after)


@pytest.mark.parametrize("basis", ["dll", "pdiff"])
def test_rich_recalibration_restores_momentum_dependent_point_mass(tmp_path, basis):
    """Post-training recalibration (flash_common.recalibrate_flow_onnx) on a synthetic RICH-like sample whose
    DLLp == DLLK point mass switches off at a 'threshold' (all ties below 9 GeV, 3 % above): an untrained
    flow gives the marginal tie fraction at every momentum (wrong on both sides); after recalibration the
    tie fraction per momentum bin is the sample's, ties stay exact (DLLp == DLLK bit for bit), and
    recalibrating the recalibrated graph again (from its latent) gives the same tables.  Both RICH flow
    bases (the recalibration reads the basis from the model's metadata)."""
    import onnxruntime as ort

    from models.training.pid.flash_common import (BASIS_KEY, TieGaussianizer, build_pid_flow, export,
                                                  kin_transform_np, onnx_rich_basis, recalibrate_flow_onnx,
                                                  rich_to_flow, set_onnx_metadata)

    rng = np.random.default_rng(3)
    n = 60_000
    p = np.exp(rng.uniform(np.log(2e3), np.log(2e5), n))
    kin = np.stack([p, rng.uniform(2, 5, n), rng.integers(1, 150, n), rng.choice([-1.0, 1.0], n)], 1)
    dllk = np.where(rng.random(n) < 0.02, 0.0, rng.normal(np.log(p / 1e3), 3.0))
    tie = np.where(p < 9e3, True, rng.random(n) < 0.03)
    dllp = np.where(tie, dllk, dllk + rng.normal(2.0, 4.0, n))
    rich = np.stack([rng.normal(0, 2, n), rng.normal(0, 2, n), dllk, dllp], 1).astype(np.float32)
    t = rich_to_flow(rich, basis)
    kt = kin_transform_np(kin)
    loc, scale = kt.mean(0), kt.std(0)
    loc[3], scale[3] = 0.0, 1.0
    gauss = TieGaussianizer().fit(t, np.ones(n))
    flow = build_pid_flow(loc, scale, gauss, 4, n_layers=2, hidden=8, embed=4, seed=1, post="rich", basis=basis)
    flow.freeze()
    path = tmp_path / "rich.onnx"
    export(flow, path, 4, noise_dim=4)
    if basis != "dll":   # the training script records the basis; a model without the key is "dll"
        set_onnx_metadata(path, **{BASIS_KEY: basis})
    assert onnx_rich_basis(path) == basis

    xv = np.stack([np.exp(rng.uniform(np.log(2e3), np.log(2e5), 40_000)), rng.uniform(2, 5, 40_000),
                   rng.integers(1, 150, 40_000), rng.choice([-1.0, 1.0], 40_000)], 1).astype(np.float32)
    noise = rng.standard_normal((xv.shape[0], 4)).astype(np.float32)

    def tie_fractions(model_path):
        sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        y = sess.run(None, {"x": xv, "noise": noise})[0]
        low, high = xv[:, 0] < 8.5e3, xv[:, 0] > 9.5e3
        eq = y[:, 3] == y[:, 2]
        return float(eq[low].mean()), float(eq[high].mean()), y

    lo0, hi0, _ = tie_fractions(path)
    assert lo0 < 0.8 and hi0 > 0.15      # untrained flow: the marginal fraction (~0.35) everywhere

    info = recalibrate_flow_onnx(path, kin, t, np.ones(n), post="rich", n_groups=12, eta_groups=2, n_draws=4)
    assert onnx_rich_basis(path) == basis      # kept by the rewritten graph
    assert info["momentum_groups"] >= 10 and info["eta_groups"] == 2
    assert any(abs(e - 9.0) < 0.4 for e in info["group_edges_p_GeV"]), info["group_edges_p_GeV"]   # the tree split
    lo1, hi1, y = tie_fractions(path)
    assert lo1 > 0.995, lo1
    assert abs(hi1 - 0.03) < 0.01, hi1
    # ties exact: the flow variable DLLp - DLLK is exactly 0, so DLLp == DLLK bit for bit; DLLK == 0 kept
    assert np.all((y[:, 3] == y[:, 2]) == ((y[:, 3] - y[:, 2]) == 0))
    assert abs(float(np.mean(y[:, 2] == 0)) - 0.02) < 0.006
    # the marginals of the basis's flow variables are the sample's (KS); those of the DLLs that are sums of
    # flow variables depend on the flow's dependence structure, i.e. its training (not done here)
    from scipy import stats

    yt = rich_to_flow(y, basis)
    for c in range(4):
        assert stats.ks_2samp(yt[:, c], t[:, c]).statistic < 0.03, (basis, c)
    # recalibrating again starts from the latent of the recalibrated graph: same result
    tab1 = {i.name: i for i in __import__("onnx").load(str(path)).graph.initializer}["recal/q_pair"]
    recalibrate_flow_onnx(path, kin, t, np.ones(n), post="rich", n_groups=12, eta_groups=2, n_draws=4)
    tab2 = {i.name: i for i in __import__("onnx").load(str(path)).graph.initializer}["recal/q_pair"]
    assert tab1.SerializeToString() == tab2.SerializeToString()


def test_pdiff_basis_reproduces_a_no_ring_ridge_the_dll_basis_spreads(tmp_path):
    """Issue 6, sixth round: below a hadron's threshold its hypothesis predicts no ring, and DLLe - DLLp of the
    tracks with no photon in the electron window sits on a narrow ridge (about minus the expected electron
    yield).  Synthetic sample: 25 % of the rows on a ridge DLLe - DLLp = -20 + 0.1 ln(p / 10 GeV) of width
    0.02, the DLLs otherwise broad and correlated.  With the same (untrained) flow and the same recalibration,
    the 'pdiff' basis, whose first variable is DLLe - DLLp, reproduces the ridge fraction, while in the 'dll'
    basis the ridge is an oblique structure the flow spreads out.  (On the kaon teacher sample the price of
    'pdiff', DLLe and DLLmu as small differences of large flow variables, outweighs this: the default is 'dll'.)"""
    import onnxruntime as ort

    from models.training.pid.flash_common import (BASIS_KEY, TieGaussianizer, build_pid_flow, export,
                                                  kin_transform_np, recalibrate_flow_onnx, rich_to_flow,
                                                  set_onnx_metadata)

    rng = np.random.default_rng(11)
    n = 60_000
    p = np.exp(rng.uniform(np.log(2e3), np.log(1e5), n))
    kin = np.stack([p, rng.uniform(2, 5, n), rng.integers(1, 150, n), rng.choice([-1.0, 1.0], n)], 1)
    dllp = rng.normal(-5.0, 6.0, n)
    ridge_at = -20.0 + 0.1 * np.log(p / 1e4)
    on = rng.random(n) < 0.25
    dlle = np.where(on, dllp + ridge_at + rng.normal(0, 0.02, n), dllp + rng.normal(-8.0, 7.0, n))
    rich = np.stack([dlle, dlle + rng.normal(1.0, 2.0, n), dllp + rng.normal(-3, 4, n), dllp], 1).astype(np.float32)
    xv = kin[:30_000].astype(np.float32)
    noise = rng.standard_normal((xv.shape[0], 4)).astype(np.float32)
    kt = kin_transform_np(kin)
    loc, scale = kt.mean(0), kt.std(0)
    loc[3], scale[3] = 0.0, 1.0

    def ridge_fraction(y, k):
        return float(np.mean(np.abs(y[:, 0] - y[:, 3] - ridge_at[k]) < 0.1))

    target = ridge_fraction(rich[:30_000], slice(0, 30_000))
    assert 0.24 < target < 0.27
    got = {}
    for basis in ("dll", "pdiff"):
        t = rich_to_flow(rich, basis)
        flow = build_pid_flow(loc, scale, TieGaussianizer().fit(t, np.ones(n)), 4, n_layers=2, hidden=8, embed=4,
                              seed=1, post="rich", basis=basis)
        flow.freeze()
        path = tmp_path / f"rich_{basis}.onnx"
        export(flow, path, 4, noise_dim=4)
        set_onnx_metadata(path, **{BASIS_KEY: basis})
        recalibrate_flow_onnx(path, kin, t, np.ones(n), post="rich", n_groups=8, n_draws=2)
        y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": xv, "noise": noise})[0]
        got[basis] = ridge_fraction(y.astype(np.float64), slice(0, 30_000))
    assert abs(got["pdiff"] - target) < 0.02, got
    assert got["dll"] < 0.5 * target, got


def test_teacher_rich_rows_are_fresh_hasrich_rows_of_the_species():
    """--rich-extra-tracks (flash_common.teacher_rich_rows): the hasRich rows of fresh teacher tracks of one
    species, identical to the teacher run directly on those rows (column order, hasRich filter, chunk
    offsets), in a row range of their own, and distributed as tracks of the species drawn elsewhere."""
    from scipy import stats

    from models.training.pid.flash_common import RICH_EXTRA_ROWS_BASE, teacher_rich_rows
    from models.training.pid.make_teacher_samples import SPECIES as WRITER_SPECIES, make_chunk

    seed, first, n = 20240607, 9_200_000_000, 3000
    r = teacher_rich_rows("K", n, seed=seed, chunk=1000, first_row=first)
    assert r["simulated"] == n and r["first_row"] == first
    key = RandomStreams(seed, 0, "PIDTeacher").key_for(0)
    smp, out = make_chunk(first, n, np.array([0.0, 0.0, 0.0, 1.0, 0.0]), seed, key, probnn=False)
    assert np.all(np.abs(smp["pid"]) == 321)
    m = np.asarray(out["hasRich"], bool)
    assert 0.9 < m.mean() < 1.0                      # the few tracks without RICH are dropped
    assert r["kin"].shape == (m.sum(), 4) and r["rich"].shape == (m.sum(), 4)
    np.testing.assert_array_equal(r["kin"][:, 0], smp["p"][m].astype(r["kin"].dtype))
    want = np.stack([np.asarray(out[c])[m] for c in ("RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp")], 1)
    np.testing.assert_array_equal(r["rich"], want.astype(np.float32))
    np.testing.assert_array_equal(r["isMuon"], np.asarray(out["isMuon"], bool)[m])
    np.testing.assert_array_equal(r["w"], np.ones(m.sum()))
    # default range: 4e12 + species * 1e10, disjoint from the sample/tests (< 1e10), the ProbNN fit (1e12),
    # the muon-enriched rows (2e12 + ...) and the fresh MUON check rows (3e12 + ...)
    assert teacher_rich_rows("p", 10, seed=seed)["first_row"] == RICH_EXTRA_ROWS_BASE + WRITER_SPECIES.index("p") * 10**10
    lo = [RICH_EXTRA_ROWS_BASE + i * 10**10 for i in range(len(WRITER_SPECIES))]
    assert lo[0] >= 4 * 10**12 and lo[-1] + 10**10 <= 5 * 10**12
    # same conditional physics as tracks of the species elsewhere: DLLK and DLLp of K rows drawn at other row
    # numbers agree (a different species' rows would not: K vs p DLLp differ by several units)
    other = teacher_rich_rows("K", n, seed=seed, first_row=first + 10**6)
    for j in (2, 3):
        assert stats.ks_2samp(r["rich"][:, j], other["rich"][:, j]).pvalue > 1e-3
    prot = teacher_rich_rows("p", n, seed=seed, first_row=first + 2 * 10**6)
    assert stats.ks_2samp(r["rich"][:, 3], prot["rich"][:, 3]).pvalue < 1e-6


def _tiny_kaon_training(tmp_path):
    """A tiny kaon teacher file and the arguments of a quick training on it: (output folder, arguments)."""
    from models.training.pid.make_teacher_samples import main as make_main

    path = tmp_path / "teacher_K.root"
    assert make_main(["--output", str(path), "--n", "3000", "--fractions", "0,0,0,1,0", "--chunk", "3000"]) == 0
    out = tmp_path / "models"
    return out, ["--input", str(path), "--species", "K", "--output-dir", str(out), "--seconds-clf", "1",
                 "--seconds-rich", "1.5", "--seconds-muon", "1", "--seconds-global", "1", "--replicas", "1",
                 "--prefix", "testpid", "--max-epochs", "2", "--recalibration-groups", "4"]


def test_global_extra_tracks_enter_the_globalpid_training_and_card(tmp_path):
    """--global-extra-tracks N: the GlobalPID model is trained on the sample's training rows plus N fresh
    teacher tracks (its preprocessing tables too), the card records them, and the noise scale and the
    validation stay on the sample's own rows."""
    from models.training.pid.train_flash_pid import main

    out, args = _tiny_kaon_training(tmp_path)
    assert main(args + ["--global-extra-tracks", "1500"]) == 0
    card = yaml.safe_load((out / "testpid_globalpid_K.yaml").read_text())
    st = card["training"]["settings"]
    ex = st["extra_rows"]
    assert ex["simulated_tracks"] == 1500 and ex["rows"] == 1500
    assert "5.03e+12 = 5e12 + species * 1e10" in ex["source"] and "teacher_global_rows" in ex["source"]
    assert card["validation"]["rows"] == card["training"]["rows_validation"] < 1000
    assert "--global-extra-tracks 1500" in card["training"]["command"]
    assert ModelSvc(threads=1).load(out / "testpid_globalpid_K.onnx") is not None


def test_norich_head_warm_start_trains_only_the_head_and_records_it(tmp_path):
    """--global-norich-hidden with --init-state of a model without the head: only the head is trained (on
    the rows without RICH, plus those of --global-norich-tracks fresh tracks), the card says so, and the
    exported model gives the earlier model's outputs, bit for bit, on tracks with RICH information."""
    import shutil

    import onnxruntime as ort

    from algorithms.pid.features import GLOBALPID_OUTPUTS, globalpid_features
    from models.training.pid.train_flash_pid import main

    out, args = _tiny_kaon_training(tmp_path)
    state = tmp_path / "state"
    assert main(args + ["--save-state", str(state)]) == 0
    old = tmp_path / "old_globalpid_K.onnx"
    shutil.copy(out / "testpid_globalpid_K.onnx", old)
    assert main(args + ["--kinds", "globalpid", "--init-state", str(state), "--global-norich-hidden", "8",
                        "--global-norich-tracks", "4000", "--seconds-global", "2", "--max-epochs", "20"]) == 0
    st = yaml.safe_load((out / "testpid_globalpid_K.yaml").read_text())["training"]["settings"]
    head = st["norich_head"]
    assert "only the no-RICH head" in head["trained"] and "no-RICH head (tanh layer 15-8-6)" in st["architecture"]
    assert head["extra_rows"]["simulated_tracks"] == 4000 and 0 < head["extra_rows"]["rows"] < 400
    assert "7.03e+12 = 7e12 + species * 1e10" in head["extra_rows"]["source"]
    assert head["rows"] > head["extra_rows"]["rows"]
    assert "--save-state" in head["replaced_card_training"]["command"]   # the figures of the model it extends
    rng = np.random.default_rng(3)
    n = 2000
    kin = np.stack([np.exp(rng.uniform(np.log(2500), np.log(1.5e5), n)), rng.uniform(2, 4.9, n),
                    rng.integers(2, 120, n), rng.choice([-1.0, 1.0], n)], 1)
    has, acc = rng.random(n) < 0.5, rng.random(n) < 0.9
    ism = acc & (rng.random(n) < 0.2)
    x = globalpid_features(kin, np.where(has[:, None], rng.normal(0, 15, (n, 4)), -1000.0), ism,
                           np.where(ism[:, None], rng.normal([-2, -4], 1, (n, 2)), -1000.0), has, acc)
    feed = {"x": x, "noise": np.zeros((n, len(GLOBALPID_OUTPUTS)), np.float32)}
    y0 = ort.InferenceSession(str(old), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    y1 = ort.InferenceSession(str(out / "testpid_globalpid_K.onnx"), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert np.array_equal(y1[has], y0[has])
    assert np.abs(y1[~has] - y0[~has]).max() > 1e-4, "the head was not trained"


def test_ismuon_extra_tracks_enter_the_classifier_training_and_card(tmp_path):
    """--ismuon-extra-tracks N: the (hasRich, InMuonAcc, isMuon) classifier is trained on the sample's
    training rows plus the classes of N fresh teacher tracks (rows from 6e12 + species * 1e10), the card
    records them, and the validation keeps the held-out rows of the sample."""
    from models.training.pid.train_flash_pid import main

    out, args = _tiny_kaon_training(tmp_path)
    assert main(args + ["--kinds", "ismuon,rich,muon,globalpid", "--ismuon-extra-tracks", "1200"]) == 0
    card = yaml.safe_load((out / "testpid_ismuon_K.yaml").read_text())
    ex = card["training"]["settings"]["extra_rows"]
    assert ex["simulated_tracks"] == 1200 and ex["rows"] == 1200
    assert "6.03e+12 = 6e12 + species * 1e10" in ex["source"]
    assert card["validation"]["rows"] == card["training"]["rows_validation"] < 1000
    assert "--ismuon-extra-tracks 1200" in card["training"]["command"]
    # only the classifier's card: the other models did not get these rows
    assert "extra_rows" not in yaml.safe_load((out / "testpid_globalpid_K.yaml").read_text())["training"]["settings"]


def test_rich_extra_tracks_enter_the_rich_training_and_card(tmp_path):
    """--rich-extra-tracks N on a tiny teacher file: the RICH flow is trained (and recalibrated) on the
    sample's hasRich training rows plus the hasRich rows of N fresh teacher tracks, the card records them,
    and the validation keeps the held-out rows of the sample."""
    from models.training.pid.train_flash_pid import main

    out, args = _tiny_kaon_training(tmp_path)
    assert main(args + ["--rich-extra-tracks", "2000", "--rich-basis", "pdiff"]) == 0
    card = yaml.safe_load((out / "testpid_rich_K.yaml").read_text())
    st = card["training"]["settings"]
    ex = st["extra_rows"]
    assert ex["simulated_tracks"] == 2000 and 1900 <= ex["rows"] < 2000
    assert "4.03e+12 = 4e12 + species * 1e10" in ex["source"] and "teacher_rich_rows" in ex["source"]
    n_train = card["training"]["rows_train"]
    assert 0.9 * n_train < st["rows"] - ex["rows"] <= n_train      # the sample's hasRich training rows
    assert st["recalibration"]["rows"] == st["rows"]
    assert card["validation"]["rows"] == card["training"]["rows_validation"] < 1000
    assert "--rich-extra-tracks 2000" in card["training"]["command"]
    # the RICH flow basis (here the non-default 'pdiff') is in the ONNX metadata, the card and the recalibration summary
    from models.training.pid.flash_common import onnx_rich_basis

    assert onnx_rich_basis(out / "testpid_rich_K.onnx") == "pdiff"
    assert "basis 'pdiff'" in st["architecture"]
    assert st["recalibration"]["flow_variables"][0] == "RichDLLe - RichDLLp"
    # the other models get no RICH extra rows
    assert "extra_rows" not in yaml.safe_load((out / "testpid_muon_K.yaml").read_text())["training"]["settings"]


def test_rich_flow_conditioned_on_ismuon(tmp_path):
    """--rich-ismuon: the RICH flow takes isMuon as a fifth input (RICH_INPUTS_WITH_ISMUON), on the sample's and
    the extra teacher rows alike; the card lists it, the runtime feeds it (the models load and run in the
    framework), and a --recalibrate-only pass keeps the five inputs."""
    from algorithms.pid.features import RICH_INPUTS_WITH_ISMUON
    from models.training.pid.flash_common import onnx_n_inputs
    from models.training.pid.train_flash_pid import main

    out, args = _tiny_kaon_training(tmp_path)
    assert main(args + ["--rich-extra-tracks", "2000", "--rich-ismuon"]) == 0
    onnx_path = out / "testpid_rich_K.onnx"
    assert onnx_n_inputs(onnx_path) == 5
    card = yaml.safe_load((out / "testpid_rich_K.yaml").read_text())
    assert [c["name"] for c in card["inputs"]] == [c[0] for c in RICH_INPUTS_WITH_ISMUON]
    assert "conditioned on isMuon too" in card["training"]["settings"]["architecture"]
    v = card["validation"]                                  # the runtime ran it on the held-out rows
    assert v["rows"] == card["training"]["rows_validation"] and 0.0 <= v["c2st"]["auc"] <= 1.0
    m = ModelSvc(threads=1, conditions_tag="2016-MagUp-13TeV").load(str(onnx_path))
    x = np.tile(np.array([[20000.0, 3.0, 100.0, 1.0, 0.0]], np.float32), (50, 1))
    y = m.run(np.vstack([x, x + np.array([0, 0, 0, 0, 1], np.float32)]), np.zeros((100, 4), np.float32))
    assert np.all(np.isfinite(y))
    assert main(args + ["--recalibrate-only"]) == 0
    assert onnx_n_inputs(onnx_path) == 5


def test_autoregressive_rich_model_learns_joint_tails_and_keeps_point_masses(tmp_path):
    """Issue 6, eighth round: the autoregressive RICH model (flash_common.build_ar_rich_model).  Synthetic
    sample: DLLK depends on momentum; DLLp == DLLK exactly (a point mass) below 9 GeV and for 3 % above;
    DLLe depends on DLLK non-linearly, with a 'mis-identification' corner (DLLe > DLLK + 2, DLLK < 0) of ~3 %
    of the rows.  After a short training and the recalibration of its tables: the ONNX graph gives the torch
    model's values, the point masses are exact and have the sample's fraction on both sides of the
    threshold, and the corner fraction is the sample's within its statistical error and a 15 % allowance --
    the quantity whose excess (K, p mis-ID rates) the flows did not reproduce."""
    import onnxruntime as ort
    import torch

    from models.training.pid.flash_common import (AR_ORDERS, ARScales, ar_value_feature, build_ar_rich_model, export,
                                                  kin_transform_np, make_group_grid, rich_to_flow, train_weighted)

    rng = np.random.default_rng(5)
    n = 80_000
    p = np.exp(rng.uniform(np.log(2e3), np.log(1e5), n))
    kin = np.stack([p, rng.uniform(2, 5, n), rng.integers(1, 150, n), rng.choice([-1.0, 1.0], n)], 1).astype(np.float32)
    dllk = rng.normal(np.log(p / 1e3), 3.0)
    tie = np.where(p < 9e3, True, rng.random(n) < 0.03)
    dllp = np.where(tie, dllk, dllk + rng.normal(2.0, 4.0, n))
    dlle = np.where(rng.random(n) < 0.8, -np.abs(dllk) + rng.normal(0, 1.0, n), dllk + rng.exponential(3.0, n))
    rich = np.stack([dlle, rng.normal(0, 2, n), dllk, dllp], 1).astype(np.float32)
    t = rich_to_flow(rich, "dll")
    w = np.ones(n)
    order = AR_ORDERS["dll"]
    grid, G, _, _, _ = make_group_grid(kin, t, w, n_groups=8, eta_groups=1, min_rows=1500)
    sc = ARScales(n_bins=32).fit(kin, t, w, grid, G, eta_groups=1)
    _, b, _, z = sc.pit(kin, t, w, seed=1)
    feats = torch.as_tensor(np.concatenate([np.stack([z[:, c], ar_value_feature(t[:, c])], 1) for c in order],
                                           1).astype(np.float32))
    bins = torch.as_tensor(b[:, list(order)])
    kt = kin_transform_np(kin)
    loc, scale = kt.mean(0), kt.std(0)
    loc[3], scale[3] = 0.0, 1.0
    model = build_ar_rich_model(loc, scale, sc, n_in=4, hidden=32, seed=2, order=order)
    x = torch.as_tensor(kin)
    train_weighted(model, lambda idx: model.loss(x[idx], feats[idx], bins[idx]), n, w,
                   lambda: float(model.loss(x[:5000], feats[:5000], bins[:5000]).mean()), seconds=40, max_epochs=40,
                   batch=1024, lr=3e-3, log=lambda *_: None)
    with torch.no_grad():
        z = torch.as_tensor(rng.standard_normal((n, 4)).astype(np.float32))
        pos = model.sample(x, z, positions=True)[1].numpy()
    u_gen = np.zeros_like(pos)
    u_gen[:, list(order)] = pos
    sc.recalibrate(kin, t, w, u_gen, eta_groups=1)
    model.set_tables(sc)
    path = tmp_path / "rich_ar.onnx"
    export(model, path, 4, noise_dim=4)

    xv = kin[:40_000]
    noise = rng.standard_normal((xv.shape[0], 4)).astype(np.float32)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": xv, "noise": noise})[0]
    with torch.no_grad():
        yt = model(torch.as_tensor(xv), torch.as_tensor(noise)).numpy()
    assert np.mean(np.abs(y - yt) < 1e-3) > 0.999       # a handful of rows on a bin edge may differ
    low, high = xv[:, 0] < 8.5e3, xv[:, 0] > 9.5e3
    eq = y[:, 3] == y[:, 2]
    assert eq[low].mean() > 0.995 and abs(eq[high].mean() - 0.03) < 0.01, (eq[low].mean(), eq[high].mean())

    def corner(r):
        return (r[:, 0] > r[:, 2] + 2) & (r[:, 2] < 0)

    ref, gen = corner(rich[:40_000]).mean(), corner(y).mean()
    sigma = np.sqrt(2 * ref / 40_000)
    assert 0.01 < ref < 0.05
    assert abs(gen - ref) <= 0.15 * ref + 2 * sigma, (gen, ref)


def test_classifier_momentum_steps_reproduce_a_step_the_smooth_classifier_spreads(tmp_path):
    """--clf-p-steps: IsMuon's station requirements change at 3, 6 and 10 GeV, so the muon-state classes
    step there.  On synthetic classes with a step at 10 GeV (isMuon 30 % below, 3 % above), the classifier
    with the feature p > 10 GeV, as exported to ONNX, gives both sides within their statistical errors, where
    the same classifier without it (same rows and steps of Adam) spreads the step over the neighbouring
    momenta; and the training command writes the feature into the card."""
    import onnxruntime as ort
    import torch

    from models.training.pid.flash_common import export, kin_transform_np, make_modules
    from models.training.pid.train_flash_pid import main

    rng = np.random.default_rng(3)
    n = 40000
    p = np.exp(rng.uniform(np.log(4000.0), np.log(25000.0), n))
    kin = np.stack([p, rng.uniform(2.0, 4.9, n), rng.integers(5, 150, n), rng.choice([-1.0, 1.0], n)], 1)
    cls = (rng.random(n) < np.where(p > 10000.0, 0.03, 0.30)).astype(np.int64)   # class 1: "isMuon"
    kt = kin_transform_np(kin)
    loc, scale = kt.mean(0), kt.std(0)
    x, y = torch.as_tensor(kin, dtype=torch.float32), torch.as_tensor(cls)
    near = np.array([8000.0, 9500.0, 9990.0, 10010.0, 10500.0, 12000.0])
    xq = np.stack([near, np.full(6, 3.0), np.full(6, 60.0), np.ones(6)], 1).astype(np.float32)
    rate = {}
    for steps in ((), (3.0, 6.0, 10.0)):
        torch.manual_seed(0)
        net = make_modules()["ClassifierNet"](loc, scale, hidden=16, n_out=2, p_steps_gev=steps)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for it in range(400):
            idx = torch.as_tensor(rng.integers(0, n, 4096))
            loss = torch.nn.functional.cross_entropy(net.logits(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        path = export(net, tmp_path / f"clf_{len(steps)}.onnx", 4)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        rate[steps] = sess.run(None, {"x": xq})[0][:, 1]
    with_steps, smooth = rate[(3.0, 6.0, 10.0)], rate[()]
    # 40k rows: the fitted rates' errors are ~0.01 (below) and ~0.003 (above)
    assert np.all(np.abs(with_steps[:3] - 0.30) < 0.04), with_steps
    assert np.all(np.abs(with_steps[3:] - 0.03) < 0.015), with_steps
    assert abs(smooth[2] - 0.30) + abs(smooth[3] - 0.03) > 0.08, smooth   # the smooth net cannot step at once

    out, args = _tiny_kaon_training(tmp_path)
    assert main(args + ["--kinds", "ismuon,rich,muon,globalpid", "--clf-p-steps", "3,6,10", "--muon-p-steps", "6,10"]) == 0
    card = yaml.safe_load((out / "testpid_ismuon_K.yaml").read_text())
    assert card["training"]["settings"]["architecture"].startswith("MLP 7-32-32-6 SiLU, softmax of (log p, eta, ")
    assert "p > 3, 6, 10 GeV" in card["training"]["settings"]["architecture"]
    assert "--clf-p-steps 3,6,10" in card["training"]["command"]


def test_init_onnx_warm_starts_from_exported_models(tmp_path):
    """--init-onnx DIR: each model starts from the parameters stored in {prefix}_{kind}_{species}.onnx there
    (the exported initializers keep the torch names), so the shipped models can be trained on without their
    --save-state; the card records the file.  A model of another architecture there is not used."""
    import shutil

    import onnx
    from onnx import numpy_helper

    from models.training.pid.train_flash_pid import main

    def nets(path):
        return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer
                if i.name.startswith("nets.")}

    out, args = _tiny_kaon_training(tmp_path)
    args = args + ["--rich-model", "ar", "--ar-hidden", "16"]
    assert main(args) == 0
    init = tmp_path / "init"
    shutil.copytree(out, init)
    ref = nets(init / "testpid_rich_K.onnx")
    assert len(ref) == 24
    # one epoch at a negligible learning rate: the warm-started parameters are the file's
    quiet = ["--kinds", "rich", "--max-epochs", "1", "--flow-lr", "1e-9"]
    assert main(args + quiet + ["--init-onnx", str(init)]) == 0
    got = nets(out / "testpid_rich_K.onnx")
    assert max(float(np.abs(got[k] - ref[k]).max()) for k in ref) < 1e-5
    st = yaml.safe_load((out / "testpid_rich_K.yaml").read_text())["training"]["settings"]
    assert st["warm_start"] == str(init / "testpid_rich_K.onnx")
    # without it the same run starts from the seed's initialisation, which the 2 epochs of the first run left
    assert main(args + quiet) == 0
    fresh = nets(out / "testpid_rich_K.onnx")
    assert max(float(np.abs(fresh[k] - ref[k]).max()) for k in ref) > 1e-3
    assert "warm_start" not in yaml.safe_load((out / "testpid_rich_K.yaml").read_text())["training"]["settings"]
    # another architecture in the folder: not used
    assert main(args[:-1] + ["8"] + quiet + ["--init-onnx", str(init)]) == 0
    assert "warm_start" not in yaml.safe_load((out / "testpid_rich_K.yaml").read_text())["training"]["settings"]


def test_widen_parameter_keeps_the_narrow_networks_function_and_lets_the_new_units_learn():
    """--init-widen: an MLP with wider hidden layers, started from a narrower one, computes the same function
    (the new units' outgoing weights are zero), and the zeroed weights get gradients (they can learn)."""
    import torch
    from torch import nn

    from models.training.pid.train_flash_pid import widen_parameter

    torch.manual_seed(1)
    narrow = nn.Sequential(nn.Linear(5, 8), nn.SiLU(), nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 7))
    wide = nn.Sequential(nn.Linear(5, 20), nn.SiLU(), nn.Linear(20, 20), nn.SiLU(), nn.Linear(20, 7))
    old = dict(narrow.named_parameters())
    with torch.no_grad():
        for k, p in wide.named_parameters():
            widen_parameter(p, old[k])
    x = torch.randn(300, 5)
    assert float((wide(x) - narrow(x)).abs().max()) < 1e-6
    wide(x).square().sum().backward()
    assert float(wide[4].weight.grad[:, 8:].abs().max()) > 1e-4
    assert float(wide[2].weight.grad[:8, 8:].abs().max()) > 1e-4
    # the new units' outgoing weights start at zero, their incoming ones random
    assert float(wide[4].weight[:, 8:].abs().max()) == 0.0 and float(wide[0].weight[8:].abs().max()) > 0.0


def test_init_widen_starts_a_wider_ar_rich_model_from_the_narrow_exported_one(tmp_path):
    """A larger --ar-hidden with --init-onnx: refused without --init-widen (another architecture); with it,
    the narrow model's parameters fill the leading block, the new units' outgoing weights are zero, and the
    card records the widened warm start."""
    import shutil

    import onnx
    from onnx import numpy_helper

    from models.training.pid.train_flash_pid import main

    def nets(path):
        return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer
                if i.name.startswith("nets.")}

    out, args = _tiny_kaon_training(tmp_path)
    assert main(args + ["--rich-model", "ar", "--ar-hidden", "8"]) == 0
    init = tmp_path / "init"
    shutil.copytree(out, init)
    ref = nets(init / "testpid_rich_K.onnx")
    wide = args + ["--rich-model", "ar", "--ar-hidden", "16", "--kinds", "rich", "--max-epochs", "1",
                   "--flow-lr", "1e-9", "--init-onnx", str(init)]
    card = out / "testpid_rich_K.yaml"
    assert main(wide) == 0
    assert "warm_start" not in yaml.safe_load(card.read_text())["training"]["settings"]
    assert main(wide + ["--init-widen"]) == 0
    assert yaml.safe_load(card.read_text())["training"]["settings"]["warm_start"] == \
        str(init / "testpid_rich_K.onnx") + " (widened)"
    got = nets(out / "testpid_rich_K.onnx")
    for k, v in ref.items():
        g = got[k]
        assert g.shape[0] >= v.shape[0] and (g.ndim == 1 or g.shape[1] >= v.shape[1])
        lead = g[:v.shape[0]] if g.ndim == 1 else g[:v.shape[0], :v.shape[1]]
        assert float(np.abs(lead - v).max()) < 1e-5, k
        if g.ndim == 2 and g.shape[1] > v.shape[1]:
            assert float(np.abs(g[:v.shape[0], v.shape[1]:]).max()) < 1e-5, k
    assert got["nets.0.0.weight"].shape[0] == 16
