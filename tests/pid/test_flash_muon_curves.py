"""MUON model on curves (models/training/pid/flash_common.py): the curves are found from samples alone,
the exported graph puts every generated (MuonMuLL, MuonBkgLL) pair on a curve, and the curve
probabilities follow the conditions.  Synthetic curves (not the teacher's formulas), so that the test
checks the method rather than one detector."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("scipy")

from models.training.pid.flash_common import (CurveTables, build_curve_muon_model, export,  # noqa: E402
                                              find_muon_curves, train_weighted)


def curve_bkg(c, s):
    """Three smooth curves MuonBkgLL = g_c(s) over s = MuonMuLL - MuonBkgLL; curves 1 and 2 cross."""
    return (-3.0 - 0.4 * c) + (0.2 + 0.15 * c) * s - 0.3 * np.sin(0.5 * s + c)


def synthetic(n, seed, crossing=True):
    """Rows with kinematics x (p in MeV, eta, nTracks, charge), curve probabilities and the position
    along the curve both depending on p."""
    rng = np.random.default_rng(seed)
    p = np.exp(rng.uniform(np.log(3e3), np.log(1e5), n))
    lp = np.log(p / 1e4)
    logits = np.stack([0.0 * lp, 1.0 + 1.5 * lp, -0.5 - lp], 1)
    pr = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    c = (rng.random(n)[:, None] > np.cumsum(pr, 1)).sum(1)
    s = rng.normal(2.0 * lp + c, 1.0 + 0.2 * c)
    cc = c if crossing else np.zeros(n, int)
    b = curve_bkg(c, s) + (0 if crossing else 3.0 * c)
    x = np.stack([p, rng.uniform(2, 5, n), rng.integers(5, 200, n), np.where(rng.random(n) < 0.5, 1, -1)], 1)
    del cc
    return x.astype(np.float32), np.stack([s + b, b], 1).astype(np.float32), c, pr


def test_curves_are_found_from_samples():
    _, y, c, _ = synthetic(20_000, 1, crossing=False)
    r = find_muon_curves(y[:, 0], y[:, 1])
    assert r["n_curves"] == 3
    assert r["on_curve_fraction"] > 0.995
    conf = np.zeros((3, 3), int)
    np.add.at(conf, (r["labels"], c), 1)
    assert np.all(conf.max(1) / conf.sum(1) > 0.99), conf          # each curve found is one true curve
    # crossing curves: labels may swap at a crossing, but every row stays on a continuous curve
    _, y2, _, _ = synthetic(20_000, 2, crossing=True)
    r2 = find_muon_curves(y2[:, 0], y2[:, 1])
    assert r2["on_curve_fraction"] > 0.99 and 3 <= r2["n_curves"] <= 5


def test_curve_model_puts_mass_on_curves_and_follows_conditions(tmp_path):
    import onnxruntime as ort

    x, y, c, _ = synthetic(30_000, 3, crossing=False)
    cur = find_muon_curves(y[:, 0], y[:, 1])
    tab = CurveTables().fit(y[:, 0], y[:, 1], cur["labels"], cur["n_curves"], n_knots=513)
    kt = np.stack([np.log(x[:, 0] / 1000.0), x[:, 1], np.log1p(x[:, 2]), x[:, 3]], 1)
    model = build_curve_muon_model(kt.mean(0), kt.std(0) + 1e-3, tab, 16, hidden=16)
    tgt = model.targets(tab.position(y[:, 0], y[:, 1], cur["labels"]), cur["labels"])
    xt = torch.as_tensor(x)
    train_weighted(model, lambda idx: model.loss(xt[idx], tgt[idx]), x.shape[0], np.ones(x.shape[0]),
                   lambda: float(model.loss(xt[:2000], tgt[:2000]).mean()), seconds=8, max_epochs=30, lr=5e-3,
                   log=None)
    path = export(model, tmp_path / "curves.onnx", 4, noise_dim=2)
    xs, _, c_true, pr = synthetic(40_000, 4, crossing=False)
    noise = np.random.default_rng(5).standard_normal((xs.shape[0], 2)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    g = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": xs, "noise": noise})[0]
    with torch.no_grad():
        gt = model(torch.as_tensor(xs), torch.as_tensor(noise)).numpy()
    assert np.mean(np.abs(g - gt).max(1) < 1e-3) > 0.999              # the graph is the torch model
    s = g[:, 0].astype(np.float64) - g[:, 1]
    # every generated pair lies on one of the true curves (the 2D flow spread them off the curves)
    res = np.min(np.stack([np.abs(g[:, 1] - (curve_bkg(k, s) + 3.0 * k)) for k in range(3)], 1), 1)
    assert np.quantile(res, 0.999) < 5e-3 and np.median(res) < 1e-4, np.quantile(res, [0.5, 0.999])
    # curve probabilities given p: generated vs true, in p bins (3 sigma + 0.03)
    gen_c = np.argmin(np.stack([np.abs(g[:, 1] - (curve_bkg(k, s) + 3.0 * k)) for k in range(3)], 1), 1)
    lp = np.log(xs[:, 0] / 1e4)
    for lo, hi in ((-1.3, -0.5), (-0.5, 0.5), (0.5, 2.4)):
        m = (lp >= lo) & (lp < hi)
        for k in range(3):
            f, t = np.mean(gen_c[m] == k), pr[m, k].mean()
            assert abs(f - t) < 3 * np.sqrt(t * (1 - t) / m.sum()) + 0.03, (lo, hi, k, f, t)
    # the position along the curve follows the conditions too (mean of s per p bin)
    for lo, hi in ((-1.3, -0.5), (0.5, 2.4)):
        m = (lp >= lo) & (lp < hi) & (gen_c == 0)
        assert abs(np.mean(s[m]) - np.mean(2.0 * lp[m])) < 0.15


def test_curve_model_momentum_steps_reproduce_curve_weights_that_step(tmp_path):
    """p_steps_gev: IsMuon's station requirements change at 3, 6 and 10 GeV, so the curves' weights step
    there.  Synthetic rows whose curve 2 has weight 0.5 below 10 GeV and 0.05 above: with the feature
    p > 10 GeV the exported graph steps right at 10 GeV (a smooth MLP of log p moves by ~0.05 from 9.9 to
    10.1 GeV)."""
    import onnxruntime as ort

    rng = np.random.default_rng(7)
    n = 40_000
    x, _, _, _ = synthetic(n, 8, crossing=False)
    p = x[:, 0].astype(np.float64)
    c = np.where(rng.random(n) < np.where(p > 10_000.0, 0.05, 0.5), 2, rng.integers(0, 2, n))
    s = rng.normal(1.0 + c, 1.0)
    b = curve_bkg(c, s) + 3.0 * c
    y = np.stack([s + b, b], 1).astype(np.float32)
    cur = find_muon_curves(y[:, 0], y[:, 1])
    assert cur["n_curves"] == 3
    tab = CurveTables().fit(y[:, 0], y[:, 1], cur["labels"], cur["n_curves"], n_knots=257)
    kt = np.stack([np.log(x[:, 0] / 1000.0), x[:, 1], np.log1p(x[:, 2]), x[:, 3]], 1)
    model = build_curve_muon_model(kt.mean(0), kt.std(0) + 1e-3, tab, 8, hidden=16, p_steps_gev=(3, 6, 10))
    tgt = model.targets(tab.position(y[:, 0], y[:, 1], cur["labels"]), cur["labels"])
    xt = torch.as_tensor(x)
    train_weighted(model, lambda idx: model.loss(xt[idx], tgt[idx]), n, np.ones(n),
                   lambda: float(model.loss(xt[:2000], tgt[:2000]).mean()), seconds=120, max_epochs=60, lr=5e-3,
                   log=None)
    path = export(model, tmp_path / "curves_steps.onnx", 4, noise_dim=2)
    m = 20_000
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    frac = {}
    for p_q in (9_900.0, 10_100.0):
        xq = np.tile(np.array([[p_q, 3.0, 60.0, 1.0]], np.float32), (m, 1))
        g = sess.run(None, {"x": xq, "noise": rng.standard_normal((m, 2)).astype(np.float32)})[0]
        sg = g[:, 0].astype(np.float64) - g[:, 1]
        k = np.argmin(np.stack([np.abs(g[:, 1] - (curve_bkg(j, sg) + 3.0 * j)) for j in range(3)], 1), 1)
        frac[p_q] = np.mean(k == 2)
    # above: 0.05 (the draws' error 0.0015, the fit's ~0.005); the step of 0.45 at once (below, the fit
    # comes out a few 0.01 low after this short training)
    assert abs(frac[10_100.0] - 0.05) < 0.02, frac
    assert frac[9_900.0] - frac[10_100.0] > 0.35, frac
