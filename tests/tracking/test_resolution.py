"""Track resolution model and TrackResolution algorithm: KS per output on held-out rows of the LHCb
2016 sample, p <= 0 guard, reproducibility regardless of batch composition."""
from pathlib import Path

import numpy as np
import pytest

from framework import Collection
from framework.context import BatchContext
from framework.models import ModelSvc
from framework.validation import ks_distance
from algorithms.tracking.ctb import RESOLUTION_OUTPUTS
from algorithms.tracking.resolution import TrackResolution, apply_resolution
from tests.tracking.helpers import HeldoutC2ST, make_alg, synthetic_mc

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "trk2016_resolution.onnx"
# KS tolerance for 30k vs 30k rows: the model's own figure (card: < 0.018 on 62k rows; 0.0195 max on these
# 30k rows with this noise) plus the two-sample statistical fluctuation (1.36 sqrt(2/30000) = 0.011 at 95 %)
KS_TOL = 0.03


def needs_model():
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} not trained yet (python -m models.training.tracking.train_resolution)")


def make_event_data(n_events=30, n_per_event=25, seed=3):
    """Synthetic MC particles/vertices and TrackTypes rows (every particle a track of type 3/4/5)."""
    rng = np.random.default_rng(seed)
    n = n_events * n_per_event
    parts, verts = synthetic_mc(rng, n_events, n_per_event, [211, -211, 321, -321, 2212, 13, -11], (2.0, 5.0),
                                600.0, 150)
    counts = np.full(n_events, n_per_event)
    tt = {"mc_index": np.tile(np.arange(n_per_event, dtype=np.int32), n_events),
          "track_type": rng.choice(np.array([3, 3, 3, 4, 5, 0, -1], np.int8), size=n)}
    return parts, verts, Collection.from_counts(tt, counts)


def subset(coll, events):
    return coll.select_events(np.isin(np.arange(coll.n_events), events))


def run_resolution(alg, event_numbers, parts, verts, tt):
    ctx = BatchContext(event_numbers, run_number=1, seed=42).for_algorithm(alg.name)
    return alg.execute(ctx, TrackTypes=tt, Particles=parts, Vertices=verts)


def keyed(states, event_numbers):
    ev = np.asarray(event_numbers)[states.event_index]
    order = np.lexsort((states["mc_index"], ev))
    return {k: np.asarray(v)[order] for k, v in states.columns.items()}, ev[order]


def test_ks_per_output_on_heldout_rows(shared):
    needs_model()
    from models.training.tracking.generative import load_tree, split_indices
    from models.training.tracking.train_resolution import features_of

    d = load_tree(shared("data", "lhcb_trk2016_samples.root"), "Resolution")
    _, va = split_indices(len(d["pid"]))
    va = va[:30_000]
    dv = {k: v[va] for k, v in d.items()}
    model = ModelSvc(threads=1).load(str(MODEL))
    noise = np.random.default_rng(99).standard_normal((len(va), model.noise_dim)).astype(np.float32)
    gen = model.run({"x": features_of(dv), "noise": noise})
    assert np.all(np.isfinite(gen))
    ks = {n: ks_distance(dv[n], gen[:, i]) for i, n in enumerate(RESOLUTION_OUTPUTS)}
    assert max(ks.values()) < KS_TOL, ks
    # the tolerance can fail: a 15 % width error of dx between two halves of the reference is caught
    half = len(va) // 2
    assert ks_distance(dv["dx"][:half], dv["dx"][half:] * 1.15) > KS_TOL


#: downstream tracks (4 % of the sample, 2746 held-out rows): 10 noise draws per row pooled; a perfect model's KS
#: exceeds 1.63 sqrt(1/n + 1/10n) = 0.033 with 1 % probability (asymptotic Kolmogorov law).  The model whose dx/dy
#: regression head also applied to downstream tracks gave dx 0.063 (KS) and a dx core 11 % too wide here
DOWNSTREAM_DRAWS = 10


def _downstream_heldout(shared):
    from models.training.tracking.generative import load_tree, split_indices
    from models.training.tracking.train_resolution import features_of

    d = load_tree(shared("data", "lhcb_trk2016_samples.root"), "Resolution")
    _, va = split_indices(len(d["pid"]))
    va = va[d["track_type"][va] == 5]
    dv = {k: v[va] for k, v in d.items()}
    model = ModelSvc(threads=1).load(str(MODEL))
    x = np.tile(features_of(dv), (DOWNSTREAM_DRAWS, 1))
    noise = np.random.default_rng(2024).standard_normal((len(x), model.noise_dim)).astype(np.float32)
    ref = np.stack([dv[n] for n in RESOLUTION_OUTPUTS], axis=1).astype(np.float64)
    return ref, model.run({"x": x, "noise": noise}).astype(np.float64)


def test_downstream_outputs_on_heldout_rows(shared):
    """Per-output KS of the downstream tracks at the 1 % statistical tolerance, and the robust core widths of the
    x/y residuals (the columns with a regression head, which downstream tracks do not use) within 6 % (the
    reference core's own statistical error on these rows is 2.2 %)."""
    needs_model()
    ref, gen = _downstream_heldout(shared)
    n = len(ref)
    tol = 1.63 * np.sqrt(1.0 / n + 1.0 / (DOWNSTREAM_DRAWS * n))
    ks = {name: ks_distance(ref[:, i], gen[:, i]) for i, name in enumerate(RESOLUTION_OUTPUTS)}
    assert max(ks.values()) < tol, (tol, ks)

    def core(v):
        return 1.4826 * np.median(np.abs(v - np.median(v)))

    ratios = {name: core(gen[:, i]) / core(ref[:, i]) for i, name in enumerate(("dx", "dy"))}
    assert all(abs(r - 1.0) < 0.06 for r in ratios.values()), ratios
    # the core check can fail: dx 13 % too wide is caught (the model before this head: 1.11)
    assert core(gen[:, 0] * 1.13) / core(ref[:, 0]) > 1.06


def test_p_reco_guard_never_nan():
    ctb = {k: np.zeros(3) for k in ("x", "y", "z", "tx", "ty")}
    ctb["p"] = np.array([1000.0, 1000.0, 1000.0])
    out = np.zeros((3, 9))
    out[:, 5] = [-1500.0, -1000.0, 200.0]   # p_reco < 0, = 0, > 0
    out[:, 7] = [0.3, 12.7, 25.2]
    cols, ok = apply_resolution(ctb, out, np.array([1, -1, -1]))
    np.testing.assert_array_equal(ok, [False, False, True])
    assert all(np.all(np.isfinite(np.asarray(v, dtype=np.float64))) for v in cols.values())
    assert cols["qop"][2] == pytest.approx(-1 / 1200.0)
    np.testing.assert_array_equal(cols["ndof"], [1, 12, 25])


def test_algorithm_outputs_and_reproducibility():
    needs_model()
    parts, verts, tt = make_event_data()
    evn = np.arange(1000, 1000 + parts.n_events, dtype=np.int64)
    alg = make_alg(TrackResolution)
    full, ev_full = keyed(run_resolution(alg, evn, parts, verts, tt), evn)
    # same events, different batch composition (two batches of different sizes, reversed order)
    a, b = np.arange(0, 11), np.arange(11, parts.n_events)
    pieces = []
    for sel in (b, a):
        s = run_resolution(alg, evn[sel], subset(parts, sel), subset(verts, sel), subset(tt, sel))
        cols, ev = keyed(s, evn[sel])
        pieces.append((cols, ev))
    cols = {k: np.concatenate([pieces[1][0][k], pieces[0][0][k]]) for k in full}
    for k in full:
        np.testing.assert_array_equal(cols[k], full[k], err_msg=k)
    # content checks
    n_reco = int(np.isin(tt["track_type"], [3, 4, 5]).sum())
    assert len(full["x"]) >= 0.98 * n_reco
    assert set(np.unique(full["type"])) <= {3, 4, 5}
    assert np.all(full["ndof"] >= 1) and np.all(full["p"] > 0)
    np.testing.assert_allclose(full["qop"], full["charge"] / full["p"])
    assert np.all(np.sign(full["true_qop"]) == full["charge"])
    for c in ("x", "y", "z", "tx", "ty", "qop", "chi2PerDoF", "ghostProb"):
        assert np.all(np.isfinite(full[c])), c
    # the true CTB point is the closest approach to the beam
    np.testing.assert_allclose(full["true_x"] * full["true_tx"] + full["true_y"] * full["true_ty"], 0, atol=1e-9)
    assert alg.counter("tracks").entries == 2 * len(full["x"])  # two passes over the same events


def _ungauss_like_graph(table_pair, u, n_knots, g_max=5.0):
    """numpy replica of the graph's inverse quantile lookup on a (q_k, q_{k+1} - q_k) table (one group)."""
    pos = np.clip((u + g_max) * (n_knots - 1) / (2 * g_max), 0.0, n_knots - 1 - 1e-3)
    i0 = np.floor(pos).astype(np.int64)
    frac = pos - i0
    idx = i0 + np.arange(u.shape[1]) * n_knots
    return table_pair[idx, 0] + frac * table_pair[idx, 1]


def test_marginal_recalibration_fixes_a_too_peaked_flow():
    """Gaussianizer.calibrate: a 'flow' whose u is 8 % too narrow (the shortfall of the first models'
    residual cores) gives the reference marginal after the quantile-mapping recalibration."""
    from models.training.tracking.generative import Gaussianizer

    rng = np.random.default_rng(4)
    t = np.stack([rng.standard_t(3, 200_000) * 0.02, rng.gamma(2.0, 1.0, 200_000)], axis=1)  # heavy tail, skewed
    gz = Gaussianizer().fit(t)
    u_gen = rng.standard_normal((200_000, 2)) * 0.92
    before = _ungauss_like_graph(gz.graph_table(), u_gen, len(gz.g))
    ks_before = max(ks_distance(t[:, i], before[:, i]) for i in range(2))
    shift = gz.calibrate(t, np.zeros(len(t), np.int64), u_gen, np.zeros(len(u_gen), np.int64))
    assert shift > 0.02
    u_new = rng.standard_normal((200_000, 2)) * 0.92  # fresh draws of the same (imperfect) flow
    after = _ungauss_like_graph(gz.graph_table(), u_new, len(gz.g))
    ks_after = max(ks_distance(t[:, i], after[:, i]) for i in range(2))
    assert ks_before > 0.02 and ks_after < 0.006, (ks_before, ks_after)
    core = lambda v: np.median(np.abs(v - np.median(v)))  # noqa: E731
    assert core(after[:, 0]) / core(t[:, 0]) == pytest.approx(1.0, abs=0.02)
    assert np.all(np.diff(gz.q[0], axis=1) > 0)  # still strictly increasing: invertible, Gather-able


def test_momentum_loc_scale_table_matches_numpy():
    """MomentumScale: the graph's table (one Gather per row) reproduces loc/scale, and the transform
    removes a p-dependent location and width."""
    from models.training.tracking.generative import MomentumScale

    rng = np.random.default_rng(5)
    n = 120_000
    lp = rng.uniform(2.0, 5.8, n)
    grp = rng.integers(0, 3, n)
    width = 10 ** (2.5 - lp) * (1 + grp)
    t = np.stack([0.01 * lp + width * rng.standard_normal(n), rng.standard_normal(n)], axis=1)
    ms = MomentumScale(columns=[0]).fit(t, lp, grp, n_groups=3)
    z = ms.transform(t, lp, grp)
    for g in range(3):
        for lo in (2.2, 3.5, 5.0):
            m = (grp == g) & (np.abs(lp - lo) < 0.1)
            assert 1.4826 * np.median(np.abs(z[m, 0] - np.median(z[m, 0]))) == pytest.approx(1.0, abs=0.08)
            assert np.median(z[m, 0]) == pytest.approx(0.0, abs=0.08)
    np.testing.assert_array_equal(z[:, 1], t[:, 1])  # untouched column
    tab = ms.graph_table()
    K, D = ms.n_knots, 2
    pos = np.clip((lp - ms.lo) * (K - 1) / (ms.hi - ms.lo), 0, K - 1 - 1e-3)
    i0 = np.floor(pos).astype(int)
    frac = (pos - i0)[:, None]
    row = tab[i0 + grp * K]
    loc, sc = ms.loc_scale(lp, grp)
    np.testing.assert_allclose(row[:, :D] + frac * row[:, D:2 * D], loc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(row[:, 2 * D:3 * D] + frac * row[:, 3 * D:], sc, rtol=1e-5)


def _slope_table_setup():
    from models.training.tracking.generative import Gaussianizer, table_group

    rng = np.random.default_rng(6)
    n = 20_000
    x = np.zeros((n, 12), np.float32)
    x[:, 0:3] = rng.normal(0, 1, (n, 3))
    x[:, 3:5] = rng.normal(0, 0.08, (n, 2))
    x[:4, 3], x[:4, 4] = [0.03, 0.0, 0.08, 0.0], [0.0, 0.03, 0.0, 0.08]  # exactly on the edges
    x[:, 5] = rng.uniform(2.5, 5.5, n)
    x[:, 8] = 1
    kind = rng.integers(0, 3, n)
    x[np.arange(n), 9 + kind] = 1
    p_edges, th_edges = (3.0, 3.5, 4.0, 4.5), (0.03, 0.08)
    g = table_group(x, p_edges, theta_edges=th_edges)
    t = rng.standard_normal((n, 2))
    t[g == 1, 0] += 5.0  # a distinctive sub-group
    gz = Gaussianizer().fit(t, g, n_groups=45, n_sub=3, min_rows=300)
    return x, kind, g, t, gz, p_edges, th_edges


def test_slope_table_groups_and_sparse_groups_fall_back():
    """Quantile-table groups track type x p bin x polar-slope bin (rows exactly on an edge included); a
    slope sub-group with too few rows gets its coarse group's table."""
    x, kind, g, t, gz, _, _ = _slope_table_setup()
    th = np.hypot(x[:, 3].astype(np.float64), x[:, 4])
    assert np.array_equal(g % 3, (th >= 0.03 - 1e-7).astype(int) + (th >= 0.08 - 1e-7))
    assert np.array_equal(g // 15, kind)
    counts = np.bincount(g, minlength=45)
    sparse = np.flatnonzero(counts < 300)
    assert sparse.size and counts[1] >= 300
    for k in sparse:  # the coarse group's table
        coarse = (g // 3) == (k // 3)
        np.testing.assert_allclose(gz.q[k, :, 120], np.median(t[coarse], axis=0), atol=0.05)
    assert gz.q[1, 0, 120] == pytest.approx(5.0, abs=0.1)


def test_sparse_slope_groups_fall_back_to_the_same_slope_bin_at_nearby_momenta():
    """--theta-fallback p-neighbours: a sparse slope sub-group gets the table of the *same* slope bin in the
    nearest momentum bins of its track type (window widened until it holds min_rows rows), not its coarse
    type x p group, whose rows are mostly at other slopes (the nDoF of large-angle tracks at high p); the
    recalibration uses the same rows; a sub-group sparse in every p bin still takes its coarse group."""
    from models.training.tracking.generative import Gaussianizer

    rng = np.random.default_rng(11)
    n_p, n_sub = 4, 2   # groups (type * n_p + p bin) * n_sub + slope bin; one track type here
    sizes = {(0, 0): 3000, (0, 1): 900, (1, 0): 3000, (1, 1): 150, (2, 0): 3000, (2, 1): 200, (3, 0): 3000,
             (3, 1): 100}
    g = np.concatenate([np.full(m, pb * n_sub + sub) for (pb, sub), m in sizes.items()])
    sub = g % n_sub
    t = (rng.standard_normal(g.size) + np.where(sub == 1, 30.0, 0.0) + 0.5 * (g // n_sub))[:, None]
    gz = Gaussianizer().fit(t, g, n_groups=n_p * n_sub, n_sub=n_sub, min_rows=400, n_p=n_p)
    # p bin 1, slope bin 1 (150 rows): window p bins 0..2 of slope bin 1 (900 + 150 + 200 rows)
    assert gz.members[3].tolist() == [1, 3, 5]
    assert gz.members[5].tolist() == [3, 5, 7]          # 150 + 200 + 100 = 450 rows
    assert gz.members[7].tolist() == [3, 5, 7]          # p bin 3: window 2..3 (300 rows), then 1..3
    assert gz.members[1].tolist() == [1] and gz.members[0].tolist() == [0]
    assert gz.q[3, 0, 120] > 25                          # the large-slope shape, not the coarse group's
    old = Gaussianizer().fit(t, g, n_groups=n_p * n_sub, n_sub=n_sub, min_rows=400)
    assert old.members[3].tolist() == [2, 3] and old.q[3, 0, 120] < 10   # the coarse group: mostly slope bin 0
    # the recalibration maps the generated u of the same member rows
    u_gen = rng.standard_normal((g.size, 1)) * 0.9
    gz.calibrate(t, g, u_gen, g)
    big = np.isin(g, [1, 3, 5])
    np.testing.assert_allclose(gz.q[3, 0, 120], np.median(t[big]), atol=0.5)
    # slope bin 1 sparse in every p bin together (450 < 1000 rows): the coarse group
    g2 = np.where((g % n_sub == 1) & (g // n_sub == 0), g - 1, g)
    gz2 = Gaussianizer().fit(t, g2, n_groups=n_p * n_sub, n_sub=n_sub, min_rows=1000, n_p=n_p)
    assert gz2.members[3].tolist() == [2, 3]


def test_slope_table_groups_graph_matches_numpy():
    """The graph's arithmetic (torch, as exported) equals table_group() row by row; the derived slope
    features agree between numpy and torch; the residual parametrisation acts on its columns only."""
    torch = pytest.importorskip("torch", reason="the exported-graph half needs PyTorch (training only)")
    from models.training.tracking.generative import ConditionScaler, DerivedConditions, build_flow

    x, _, g, _, gz, p_edges, th_edges = _slope_table_setup()
    der = DerivedConditions().fit(x)
    flow = build_flow(12, 2, ConditionScaler(flag_columns=range(6, 12)).fit(x), gz, n_layers=2, hidden=8, embed=4,
                      p_edges=p_edges, theta_edges=th_edges, derived=der, residual_columns=[0])
    xt = torch.as_tensor(x)
    np.testing.assert_array_equal(flow.table_group(xt, flow.group(xt)).numpy()[:, 0], g)
    np.testing.assert_allclose(der.torch(xt).numpy(), der.numpy(x), rtol=1e-6, atol=1e-6)
    mu, sig = flow.reg_loc_scale(flow.features(xt))  # residual parametrisation only on column 0
    assert torch.all(mu[:, 1] == 0) and torch.all(sig[:, 1] == 1)


def _card_auc(model_path):
    """The card's mean over its noise draws per log10 p bin (validation.c2st_auc_by_log10p_draws)."""
    import yaml

    card = yaml.safe_load(Path(model_path).with_suffix(".yaml").read_text())
    return dict(card["validation"]["c2st_auc_by_log10p_draws"]["mean"])


def _card_draw0(model_path):
    import yaml

    card = yaml.safe_load(Path(model_path).with_suffix(".yaml").read_text())
    return {k: v["auc"] for k, v in card["validation"]["c2st_auc_by_log10p"].items()}


#: measured C2ST AUC of the shipped model per log10 p bin, mean of 4 noise draws (its card:
#: validation.c2st_auc_by_log10p_draws); target <= 0.55
_C2ST = HeldoutC2ST(MODEL, "models.training.tracking.train_resolution", RESOLUTION_OUTPUTS, 12345,
                    _card_auc(MODEL) if MODEL.is_file() else {}, draws=4)


@pytest.mark.parametrize("lo,hi", [(1.9, 3.5), (3.5, 4.0), (4.0, 4.5), (4.5, 6.0)])
def test_c2st_auc_target_per_momentum_bin(shared, request, lo, hi):
    """Joint conditional test (classifier two-sample AUC, the conditions as extra features) on the held-out
    rows of each log10(p/MeV) bin, the rows and noise draws of the card: target <= 0.55 on the mean of 4
    noise draws (one draw scatters by 0.005-0.017 between draws, more than its cross-validation error).  The
    card's own draw is recomputed exactly.  Bins where the shipped model misses the target are xfail with the
    measured figure."""
    needs_model()
    key = f"log10p_{lo}_{hi}"
    _C2ST.xfail_where_card_misses(request, key)
    assert _C2ST.auc(shared, key)["auc"] == pytest.approx(_card_draw0(MODEL)[key], abs=0.003)
    mean = _C2ST.mean_auc(shared, key)
    assert mean <= 0.55, (key, mean)


@pytest.mark.parametrize("loss,clip,lo,hi", [("student", 30.0, 0.9, 1.45), ("gaussian", 30.0, 1.8, 2.5),
                                             ("gaussian", 8.0, 1.0, 1.6)])
def test_regression_head_losses(loss, clip, lo, hi):
    """The regression head's scale sigma(x) on a heteroscedastic sample whose core width is s(x) and whose 10 %
    outliers are 6 s(x) wide (rms 2.1 s): the Student-t NLL (nu = 4) stays near the core, the Gaussian NLL follows the
    rms of the targets clipped at +-clip (``--reg-loss``, ``--reg-clip``); checked on the rows with s > 2, where
    clipping at 8 bites (the ranges exclude the figure of an ignored option)."""
    torch = pytest.importorskip("torch", reason="training only")
    from models.training.tracking.generative import ConditionScaler, build_flow, regression_loc_scale, train_regression

    x, _, _, _, gz, p_edges, th_edges = _slope_table_setup()
    rng = np.random.default_rng(11)
    s = np.exp(0.6 * x[:, 0].astype(np.float64))
    t = rng.standard_normal((len(x), 2)) * s[:, None]
    out = rng.random(len(x)) < 0.1
    t[out, 0] *= 6.0
    torch.manual_seed(0)
    flow = build_flow(12, 2, ConditionScaler(flag_columns=range(6, 12)).fit(x), gz, n_layers=2, hidden=8, embed=4,
                      p_edges=p_edges, theta_edges=th_edges, residual_columns=[0])
    tr, va = np.arange(0, 16_000), np.arange(16_000, len(x))
    train_regression(flow, x[tr], t[tr], x[va], t[va], max_seconds=6.0, batch_size=1024, lr=1e-2, loss=loss, nu=4.0,
                     clip=clip, log=lambda *_: None)
    _, sig = regression_loc_scale(flow, x[va])
    wide = s[va] > 2.0
    ratio = float(np.median(sig[wide, 0] / s[va][wide]))
    assert lo < ratio < hi, (loss, clip, ratio)


def test_training_command_recorded_in_card():
    """The card's training.command holds the script and its arguments (the input file without its directory)."""
    from models.training.tracking.generative import command_line

    assert command_line("train_resolution", ["--input", "/data/x/lhcb_trk2016_samples.root", "--device", "cuda",
                                             "--max-seconds", "900"]) == (
        "python -m models.training.tracking.train_resolution --input lhcb_trk2016_samples.root --device cuda "
        "--max-seconds 900")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_flow_and_head_train_on_device(device):
    """``--device``: the regression head and the flow train on the device (a GPU where there is one: this case is
    skipped without CUDA) and come back to the CPU, where sampling and export run; the training lowers the NLL."""
    torch = pytest.importorskip("torch", reason="training only")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from models.training.tracking.generative import (ConditionScaler, build_flow, regression_loc_scale,
                                                     sample_u_numpy, train_flow, train_regression)

    x, _, _, _, gz, p_edges, th_edges = _slope_table_setup()
    rng = np.random.default_rng(3)
    t = rng.standard_normal((len(x), 2)) * np.exp(0.5 * x[:, :1].astype(np.float64))
    torch.manual_seed(0)
    flow = build_flow(12, 2, ConditionScaler(flag_columns=range(6, 12)).fit(x), gz, n_layers=2, hidden=8, embed=4,
                      p_edges=p_edges, theta_edges=th_edges, residual_columns=[0])
    tr, va = np.arange(0, 16_000), np.arange(16_000, len(x))
    train_regression(flow, x[tr], t[tr], x[va], t[va], max_seconds=2.0, batch_size=1024, lr=1e-2, device=device,
                     log=lambda *_: None)
    _, sig = regression_loc_scale(flow, x[va])
    # u[:, 0] = 2 + 0.5 N(0,1): NLL 4.5 nats for the flow at its identity start, 2.15 at best
    u = rng.standard_normal((len(x), 2)).astype(np.float32)
    u[:, 0] = 2.0 + 0.5 * u[:, 0]
    fit = train_flow(flow, x[tr], u[tr], x[va], u[va], max_seconds=2.0, batch_size=1024, lr=1e-2, device=device,
                     threads=1, log=lambda *_: None)
    assert all(p.device.type == "cpu" for p in flow.parameters())
    assert all(b.device.type == "cpu" for b in flow.buffers())
    assert np.isfinite(fit["best_val_nll"]) and fit["best_val_nll"] < 2.6, fit
    assert np.all(np.isfinite(sig)) and np.all(sig > 0)
    z = sample_u_numpy(flow, x[va][:100], rng.standard_normal((100, 2)).astype(np.float32))
    assert z.shape == (100, 2) and np.all(np.isfinite(z))


def test_recalibration_of_an_exported_flow_reproduces_the_training_calibration(tmp_path):
    """generative.recalibrate_onnx (``--recalibrate-only``) works on the exported graph alone (substitute tables
    give the regression head's mu, sigma and the flow's latent): with the training's draws and seed it gives the
    tables the training made (the latent is recovered through float32 outputs, so an order statistic may
    change: interior knots within 1 % of a table's span); more draws give the training marginals per table group;
    rows that are not the model's training rows are refused."""
    pytest.importorskip("torch", reason="training only")
    import argparse

    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    from models.training.tracking import generative as G

    x, _, _, _, _, p_edges, th_edges = _slope_table_setup()
    rng = np.random.default_rng(8)
    scale = 10 ** (3.0 - x[:, 5].astype(np.float64))
    t = np.stack([rng.standard_t(3, len(x)) * scale * (1 + np.abs(x[:, 0])),   # heavy tails, a head column
                  rng.standard_t(4, len(x)) * scale, rng.gamma(2.0, 1.0, len(x))], axis=1)
    ap = argparse.ArgumentParser()
    G.add_model_arguments(ap, max_seconds=3.0, seed=1, theta_edges=th_edges, residual="0",
                          residual_types="long,upstream", theta_fallback="p-neighbours")
    args = ap.parse_args(["--reg-seconds", "1", "--layers", "2", "--hidden", "8", "--embed", "4",
                          "--calibration-draws", "2", "--batch-size", "1024"])
    tr, va = np.arange(0, 16_000), np.arange(16_000, len(x))
    flow, fit = G.fit_model(args, x, t, tr, va, mscale_columns=(0, 1), p_edges=p_edges, postprocess=None,
                            log=lambda *_: None)
    assert fit["calibration_draws"] == 2
    path = tmp_path / "flow.onnx"
    G.export_onnx(flow, path, 12, 3)

    def table(p):
        q = numpy_helper.to_array({i.name: i for i in onnx.load(str(p)).graph.initializer}["q_pair"])
        return q[:, 0].reshape(-1, 3, 241)

    kw = dict(p_edges=p_edges, theta_edges=th_edges, theta_fallback="p-neighbours", mscale_columns=(0, 1))
    info = G.recalibrate_onnx(path, x, t, tr, n_draws=2, out_path=tmp_path / "again.onnx", **kw)
    assert info["max_cdf_shift"] == pytest.approx(fit["calibration_max_cdf_shift"], abs=2e-3)
    a, b = table(path), table(tmp_path / "again.onnx")
    span = (a[:, :, -1] - a[:, :, 0])[:, :, None]
    assert np.max(np.abs(a - b)[:, :, 1:-1] / span) < 0.01
    assert np.mean(a[:, :, 1:-1] == b[:, :, 1:-1]) > 0.3
    # a wrong table would be caught: the same comparison against a table of other draws of the same flow
    G.recalibrate_onnx(path, x, t, tr, n_draws=2, seed=5, out_path=tmp_path / "other.onnx", **kw)
    other = np.abs(a - table(tmp_path / "other.onnx"))[:, :, 1:-1] / span
    assert np.median(np.abs(a - b)[:, :, 1:-1] / span) == 0.0
    assert np.median(other) > 0.001 and np.max(other) > 0.05

    # 16 draws: the generated marginal of each well-populated table group is the training rows' (column 2 has no
    # head and no momentum normalisation: the graph's output is the target itself)
    G.recalibrate_onnx(path, x, t, tr, n_draws=16, **kw)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xs = np.concatenate([x[tr]] * 8).astype(np.float32)
    y = sess.run(None, {"x": xs, "noise": rng.standard_normal((len(xs), 3)).astype(np.float32)})[0]
    g_tr = G.table_group(x[tr], p_edges, theta_edges=th_edges)
    g_gen = np.concatenate([g_tr] * 8)
    for k in np.flatnonzero(np.bincount(g_tr) >= 1500):
        ks = ks_distance(t[tr][g_tr == k, 2], y[g_gen == k, 2])
        assert ks < 0.045, (k, ks)
    with pytest.raises(ValueError, match="momentum normalisation"):
        G.recalibrate_onnx(path, x, t * 2.0, tr, n_draws=2, out_path=tmp_path / "bad.onnx", **kw)
