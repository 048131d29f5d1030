"""FlashPID runtime: interface (columns, order, counts), sentinels, species without a model,
model/card mismatch at initialize, reproducibility independent of the batch composition."""
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from algorithms.pid.features import (LAMARR_OUTPUTS, MODEL_KINDS, NO_PID_VALUES, PROTO_BOOL_COLUMNS, PROTO_COLUMNS,
                                     PROTO_FLOAT_COLUMNS, SPECIES, decode_classes, encode_classes, pseudorapidity,
                                     species_index)
from algorithms.pid.flash import FlashPID
from framework import Collection, ConfigurationError
from framework.context import BatchContext
from framework.models import ModelSvc

REPO = Path(__file__).resolve().parents[2]
TAG = "2016-MagUp-13TeV"
PATTERN = "models/pid2016_{kind}_{species}.onnx"


def needs_models():
    missing = [f"pid2016_{k}_{s}" for k in MODEL_KINDS for s in SPECIES
               if not (REPO / "models" / f"pid2016_{k}_{s}.onnx").is_file()]
    if missing:
        pytest.skip(f"flash PID models not trained yet ({missing[0]} ...): "
                    "python -m models.training.pid.train_flash_pid --input teacher.root")


def make_alg(**props):
    alg = FlashPID("FlashPID", **props)
    alg._app = SimpleNamespace(model_svc=ModelSvc(threads=1, conditions_tag=TAG), msg_svc=None, conditions={})
    alg.initialize()
    return alg


def make_events(n_events=40, per_event=30, seed=5, pids=(211, -211, 321, -321, 2212, 13, -13, 11, 1000010020),
                types=(3, 3, 3, 3, 4, 5)):
    """Synthetic MC particles, tracks (mc_index = particle index, except a few ghosts) and summary."""
    rng = np.random.default_rng(seed)
    n = n_events * per_event
    pid = rng.choice(np.asarray(pids), size=n).astype(np.int32)
    counts = np.full(n_events, per_event)
    parts = Collection.from_counts({"pid": pid}, counts)
    p = np.exp(rng.uniform(np.log(3000), np.log(150000), n))
    eta = rng.uniform(2.0, 4.8, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    t = np.tan(2 * np.arctan(np.exp(-eta)))
    mc = np.tile(np.arange(per_event, dtype=np.int32), n_events)
    mc[rng.random(n) < 0.03] = -1                                   # ghosts: no MC link
    tracks = Collection.from_counts({
        "mc_index": mc, "type": rng.choice(np.asarray(types, np.int8), size=n), "x": np.zeros(n), "y": np.zeros(n),
        "z": np.zeros(n), "tx": t * np.cos(phi), "ty": t * np.sin(phi), "qop": np.sign(pid) / p, "p": p,
        "charge": np.where(rng.random(n) < 0.5, -1, 1).astype(np.int8)}, counts)
    summary = Collection.from_counts({"nTracks": rng.integers(10, 300, n_events).astype(np.int32)},
                                     np.ones(n_events, np.int64))
    return tracks, parts, summary


def run(alg, tracks, parts, summary, event_numbers=None):
    ev = np.arange(tracks.n_events) + 1000 if event_numbers is None else np.asarray(event_numbers)
    ctx = BatchContext(ev, run_number=1, seed=11).for_algorithm(alg.name)
    return alg.execute(ctx, Tracks=tracks, Particles=parts, Summary=summary)


# ------------------------------------------------------------------------------ pure functions
def test_species_index_and_eta():
    assert list(species_index([11, -13, 211, -321, 2212, 22, 1000010020, 0])) == [0, 1, 2, 3, 4, -1, -1, -1]
    eta = np.array([2.0, 3.5, 4.9])
    t = np.tan(2 * np.arctan(np.exp(-eta)))
    assert np.allclose(pseudorapidity(t * 0.6, t * 0.8), eta)


def test_class_encoding_roundtrip_and_draw_frequencies():
    has = np.array([0, 0, 0, 1, 1, 1], bool)
    acc = np.array([0, 1, 1, 0, 1, 1], bool)
    mu = np.array([0, 0, 1, 0, 0, 1], bool)
    c = encode_classes(has, acc, mu)
    assert list(c) == [0, 1, 2, 3, 4, 5]
    probs = np.eye(6)[c]
    h, a, m = decode_classes(probs, np.full(6, 0.5))
    assert (h == has).all() and (a == acc).all() and (m == mu).all()
    # frequencies of the categorical draw follow the probabilities (chi2 with 5 dof)
    n = 60000
    p = np.array([0.05, 0.1, 0.15, 0.2, 0.25, 0.25])
    u = (np.arange(n) + 0.5) / n
    np.random.default_rng(1).shuffle(u)
    h, a, m = decode_classes(np.tile(p, (n, 1)), u)
    counts = np.bincount(encode_classes(h, a, m), minlength=6)
    chi2 = np.sum((counts - n * p) ** 2 / (n * p))
    assert chi2 < 20.5


# ------------------------------------------------------------------------------ algorithm
def test_output_columns_order_counts_and_sentinels():
    needs_models()
    alg = make_alg()
    tracks, parts, summary = make_events()
    out = run(alg, tracks, parts, summary)
    assert list(out.columns) == list(PROTO_COLUMNS)
    assert np.array_equal(out.offsets, tracks.offsets)
    for c in PROTO_FLOAT_COLUMNS:
        assert out[c].dtype == np.float32 and np.all(np.isfinite(out[c])), c
    for c in PROTO_BOOL_COLUMNS:
        assert out[c].dtype == np.bool_
    assert set(LAMARR_OUTPUTS) <= set(out.columns)
    gi = parts.global_index(tracks.event_index, tracks["mc_index"])
    pid = np.where(gi >= 0, parts["pid"][np.maximum(gi, 0)], 0)
    modelled = (tracks["type"] == 3) & (species_index(pid) >= 0)
    # tracks without PID: documented values
    for c, v in NO_PID_VALUES.items():
        assert np.all(out[c][~modelled] == v), c
    m = modelled
    ism, has = out["isMuon"][m], out["hasRich"][m]
    assert np.all(out["InMuonAcc"][m][ism])                       # isMuon implies InMuonAcc
    assert np.all(out["MuonMuLL"][m][~ism] == -1000) and np.all(out["MuonBkgLL"][m][~ism] == -1000)
    assert np.all(out["ProbNNmu"][m][~ism] == -1)                 # Lamarr sentinel for non-muons
    assert np.all(out["MuonMuLL"][m][ism] > -999)
    for c in ("RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp"):
        assert np.all(out[c][m][~has] == -1000) and np.all(out[c][m][has] > -999)
    for c in ("ProbNNe", "ProbNNpi", "ProbNNk", "ProbNNp"):
        assert np.all((out[c][m] >= 0) & (out[c][m] <= 1))
    assert alg.counters["tracks"].entries == len(tracks)
    assert alg.counters["tracks with flash PID"].entries == int(m.sum())
    assert alg.counters["not of a PID track type"].entries == int((tracks["type"] != 3).sum())


def test_lamarr_sentinel_can_be_switched_off():
    needs_models()
    tracks, parts, summary = make_events(pids=(13, -13))
    out = run(make_alg(LamarrMuonSentinels=False), tracks, parts, summary)
    m = (tracks["type"] == 3) & (tracks["mc_index"] >= 0) & ~out["isMuon"]
    assert m.any() and np.all((out["ProbNNmu"][m] >= 0) & (out["ProbNNmu"][m] <= 1))


def test_species_without_model_counted_not_crashed():
    needs_models()
    alg = make_alg(Species=["pi", "K"])
    tracks, parts, summary = make_events(pids=(211, 321, 13, 1000010020))
    out = run(alg, tracks, parts, summary)
    gi = parts.global_index(tracks.event_index, tracks["mc_index"])
    pid = np.abs(np.where(gi >= 0, parts["pid"][np.maximum(gi, 0)], 0))
    long = tracks["type"] == 3
    no_model = long & ~np.isin(pid, (211, 321))
    assert no_model.sum() > 50
    assert alg.counters["no model for species"].entries == int(no_model.sum())
    assert {13, 1000010020, 0} <= alg._warned      # each reported once (muon, deuteron, ghost)
    for c, v in NO_PID_VALUES.items():
        assert np.all(out[c][no_model] == v), c
    run(alg, tracks, parts, summary)                # second batch: counted again, no new warnings
    assert alg.counters["no model for species"].entries == 2 * int(no_model.sum())


def test_unknown_species_name_is_configuration_error():
    with pytest.raises(ConfigurationError, match="did you mean 'mu'"):
        make_alg(Species=["pi", "muon"])


def _copy_models(tmp_path):
    for k in MODEL_KINDS:
        for s in SPECIES:
            for ext in (".onnx", ".yaml"):
                shutil.copy(REPO / "models" / f"pid2016_{k}_{s}{ext}", tmp_path / f"pid2016_{k}_{s}{ext}")
    return str(tmp_path / "pid2016_{kind}_{species}.onnx")


def test_model_card_mismatch_fails_at_initialize(tmp_path):
    needs_models()
    pattern = _copy_models(tmp_path)
    make_alg(ModelPattern=pattern)                  # the untouched copies load
    card_path = tmp_path / "pid2016_rich_K.yaml"
    card = yaml.safe_load(card_path.read_text())
    # 1. one output fewer than the ONNX graph has -> the model service refuses it
    bad = dict(card, outputs=card["outputs"][:3])
    card_path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigurationError, match="pid2016_rich_K"):
        make_alg(ModelPattern=pattern)
    # 2. same shapes, outputs in another order -> the flash-PID interface check refuses it
    swapped = dict(card, outputs=[card["outputs"][i] for i in (0, 1, 3, 2)])
    card_path.write_text(yaml.safe_dump(swapped))
    with pytest.raises(ConfigurationError, match="does not match the flash-PID interface"):
        make_alg(ModelPattern=pattern)
    # 3. a card of another species
    card_path.write_text(yaml.safe_dump(dict(card, species="pi")))
    with pytest.raises(ConfigurationError, match="species"):
        make_alg(ModelPattern=pattern)
    # 4. a missing file
    card_path.write_text(yaml.safe_dump(card))
    (tmp_path / "pid2016_muon_e.onnx").unlink()
    with pytest.raises(ConfigurationError, match="pid2016_muon_e"):
        make_alg(ModelPattern=pattern)


def test_reproducible_independent_of_batch_composition():
    needs_models()
    alg = make_alg()
    tracks, parts, summary = make_events(n_events=30)
    ev = np.arange(30) + 500
    full = run(alg, tracks, parts, summary, ev)
    # the odd events alone, in a batch of their own
    sel = np.arange(30) % 2 == 1
    part = run(alg, tracks.select_events(sel), parts.select_events(sel), summary.select_events(sel), ev[sel])
    rows = np.isin(tracks.event_index, np.flatnonzero(sel))
    for c in PROTO_COLUMNS:
        assert np.array_equal(full[c][rows], part[c]), c
    # tracks of every event in reverse order: same response per track (keyed by MC index)
    order = np.concatenate([np.arange(a, b)[::-1] for a, b in zip(tracks.offsets[:-1], tracks.offsets[1:])])
    rev = Collection({k: v[order] for k, v in tracks.columns.items()}, tracks.offsets)
    out_rev = run(alg, rev, parts, summary, ev)
    linked = tracks["mc_index"][order] >= 0
    for c in PROTO_COLUMNS:
        assert np.array_equal(out_rev[c][linked], full[c][order][linked]), c


class _FakeModel:
    """Stands in for a model service entry: card columns and a run() that records its inputs."""

    def __init__(self, inputs, outputs, noise_dim, fn):
        self.input_names, self.output_names, self.noise_dim, self.fn = list(inputs), list(outputs), noise_dim, fn
        self.card, self.path, self.seen = {}, "fake.onnx", []

    def run(self, x, noise=None):
        self.seen.append(np.array(x))
        return self.fn(x)


def _fake_stack(rich_inputs):
    from algorithms.pid.features import card_columns

    cols = lambda kind: [c[0] for c in card_columns(kind)[1]]  # noqa: E731
    probs = lambda x: np.tile(np.array([0, 0, 0, 0, 0.5, 0.5], np.float32), (len(x), 1))  # noqa: E731
    zeros = lambda n: (lambda x: np.zeros((len(x), n), np.float32))  # noqa: E731
    return {"ismuon": _FakeModel(["p", "eta", "nTracks", "track_charge"], cols("ismuon"), 0, probs),
            "rich": _FakeModel(rich_inputs, cols("rich"), 4,
                               lambda x: np.repeat(10.0 * x[:, -1:] if x.shape[1] == 5 else x[:, 3:4] * 0 - 7, 4, 1)),
            "muon": _FakeModel(["p", "eta", "nTracks", "track_charge"], cols("muon"), 2, zeros(2)),
            "globalpid": _FakeModel([c[0] for c in card_columns("globalpid")[0]], cols("globalpid"), 10, zeros(10))}


def test_rich_model_conditioned_on_ismuon_gets_the_drawn_ismuon():
    """A RICH model whose card lists isMuon after the four kinematic inputs (RICH_INPUTS_WITH_ISMUON) is fed
    the isMuon drawn before it, row by row; a model with Lamarr's four inputs gets those four only; any
    other RICH input list fails the interface check."""
    from algorithms.pid.features import RICH_INPUTS_WITH_ISMUON, rich_features
    from algorithms.pid.flash import check_pid_card, flash_pid_response

    n = 4000
    rng = np.random.default_rng(3)
    args = (np.full(n, 3), rng.uniform(3e3, 1e5, n), rng.uniform(2, 5, n), rng.integers(10, 300, n),
            np.ones(n), np.zeros(n, np.int64), np.arange(n), {k: np.uint64(7 + i) for i, k in enumerate(MODEL_KINDS)})
    mods = _fake_stack([c[0] for c in RICH_INPUTS_WITH_ISMUON])
    check_pid_card(mods["rich"], "rich", "K")
    out = flash_pid_response({3: mods}, *args)
    ism = out["isMuon"]
    assert out["hasRich"].all() and 0.4 < ism.mean() < 0.6
    np.testing.assert_array_equal(out["RichDLLe"], np.where(ism, 10.0, 0.0))
    x = mods["rich"].seen[0]
    np.testing.assert_array_equal(x, rich_features(args[1], args[2], args[3], args[4], is_muon=ism))
    lamarr = _fake_stack(["p", "eta", "nTracks", "track_charge"])
    check_pid_card(lamarr["rich"], "rich", "K")
    out4 = flash_pid_response({3: lamarr}, *args)
    assert lamarr["rich"].seen[0].shape == (n, 4) and np.all(out4["RichDLLK"] == -7)
    np.testing.assert_array_equal(out4["isMuon"], ism)   # same isMuon draw: the RICH model does not change it
    bad = _fake_stack(["p", "eta", "nTracks", "track_charge", "InMuonAcc"])
    with pytest.raises(ConfigurationError, match="isMuon"):
        check_pid_card(bad["rich"], "rich", "K")
