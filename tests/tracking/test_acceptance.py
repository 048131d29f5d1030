"""Tracking acceptance: ONNX model calibration on the LHCb 2016 sample, domain handling, draws,
card checks."""
import shutil

import numpy as np
import pytest
import yaml

from framework import Collection, ConfigurationError
from framework.context import BatchContext
from framework.validation import calibration_in_bins
from algorithms.tracking.acceptance import Acceptance
from algorithms.tracking.features import FEATURE_NAMES, acceptance_features, physical_charge
from tests.tracking import helpers
from tests.tracking.helpers import fake_app, synthetic_mc



def make_alg(cls=Acceptance, **props):
    return helpers.make_alg(cls, **props)


def make_mc(n_events, n_per_event, seed=3):
    """Events with one primary vertex each and pions/kaons/muons/electrons/protons/photons."""
    return synthetic_mc(np.random.default_rng(seed), n_events, n_per_event,
                        [211, -211, 321, -321, 2212, 13, -11, 22], (1.0, 6.0), 500.0, 50)


def ctx_for(alg, event_numbers, seed=5):
    return BatchContext(np.asarray(event_numbers), 1, seed).for_algorithm(alg.name)


# ------------------------------------------------------------------------------------------------
def test_features_definition():
    f = acceptance_features(np.array([211, -11, 13]), [1.0] * 3, [2.0] * 3, [3.0] * 3,
                            np.array([300.0, 0.0, -100.0]), np.array([400.0, 10.0, 0.0]),
                            np.array([12000.0, 1000.0, 2000.0]))
    assert f.dtype == np.float32 and f.shape == (3, 12)
    p = np.sqrt(300.0 ** 2 + 400 ** 2 + 12000 ** 2)
    np.testing.assert_allclose(f[0, :8], [1, 2, 3, np.log10(p), 0.025, 400 / 12000, np.arcsinh(12000 / 500),
                                          np.arctan2(400, 300)], rtol=1e-6)
    np.testing.assert_array_equal(f[:, 8:11], [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(f[:, 11], [1, 1, -1])  # pi+ +1, e+ (pid -11) +1, mu- (pid 13) -1
    np.testing.assert_array_equal(physical_charge([-211, 11, -13, 2212, -321, 22]), [-1, -1, 1, 1, -1, 0])


def test_calibration_on_shared_sample(shared):
    from models.training.tracking.common import load_acceptance_sample, log10p_eta_bins, split_indices

    data = load_acceptance_sample(str(shared("data", "lhcb_trk2016_samples.root")))
    _, val = split_indices(len(data["features"]))       # rows held out from the training
    val = val[: 100_000]
    x = data["features"][val]
    model = fake_app().model_svc.load("models/trk2016_acceptance.onnx")
    prob = model.run(x)[:, 0]
    bins = log10p_eta_bins(x)
    t = calibration_in_bins(prob, data["acceptance"][val], bins, min_count=300)
    assert t.max_abs_diff < 0.01, t.format("acceptance vs soft labels")
    species = data["species"][val]
    for s in (0, 2):   # e and hadrons (muons: too few rows for a 1 % test in this subsample)
        m = species == s
        ts = calibration_in_bins(prob[m], data["acceptance"][val][m], {"log10_p": (x[m, 3], bins["log10_p"][1])},
                                 min_count=300)
        assert ts.max_abs_diff < 0.01, ts.format(f"species {s}")
    # the reference's own Bernoulli draws agree with the predicted probability (binomial chi2)
    accepted = data["track_type"][val] != -1
    td = calibration_in_bins(prob, accepted, bins, min_count=300)
    from scipy import stats
    assert stats.chi2.sf(td.chi2, td.ndf) > 1e-3, td.format("draws")


def test_out_of_domain_particles_never_reach_the_model():
    alg = make_alg()
    parts, verts = make_mc(4, 10)
    c = parts.columns
    c["pz"] = c["pz"].copy()
    c["px"] = c["px"].copy()
    c["pid"] = c["pid"].copy()
    c["origin_vertex"] = c["origin_vertex"].copy()
    c["end_vertex"] = c["end_vertex"].copy()
    c["pid"][:8] = [211, 211, 211, 211, 211, 22, 211, -13]
    c["pz"][1] = 0.5          # pz <= 1 MeV
    c["pz"][2] = -3000.0      # backward
    c["px"][3] = np.nan       # non-finite
    c["origin_vertex"][4] = -1  # no origin vertex -> NaN position
    c["end_vertex"][6] = 0    # decayed: not a candidate
    parts = Collection(c, parts.offsets)
    seen = []
    real_run = alg.model.run
    alg.model.run = lambda x, *a, **k: (seen.append(np.array(x)), real_run(x, *a, **k))[1]
    out = alg.execute(ctx_for(alg, [0, 1, 2, 3]), Particles=parts, Vertices=verts)
    # photons and decayed particles are not candidates
    assert len(out) == 40 - int(np.sum(c["pid"] == 22)) - 1
    assert 5 not in out["mc_index"][: out.counts[0]] and 6 not in out["mc_index"][: out.counts[0]]
    first = {int(i): k for k, i in enumerate(out["mc_index"][: out.counts[0]])}
    for bad in (1, 2, 3, 4):
        k = first[bad]
        assert not out["in_domain"][k] and not out["accepted"][k] and out["acceptance_prob"][k] == 0
    assert out["in_domain"][first[0]] and out["in_domain"][first[7]]
    fed = np.concatenate(seen)
    assert len(fed) == int(out["in_domain"].sum())
    assert np.all(np.isfinite(fed))
    assert out["mc_index"].dtype == np.int32 and out["acceptance_prob"].dtype == np.float32


def test_bernoulli_draws_and_batch_independence():
    alg = make_alg()
    parts, verts = make_mc(2000, 20)
    out = alg.execute(ctx_for(alg, np.arange(2000)), Particles=parts, Vertices=verts)
    p = out["acceptance_prob"].astype(float)
    acc = out["accepted"]
    sigma = np.sqrt(np.sum(p * (1 - p)))
    assert abs(acc.sum() - p.sum()) < 4 * sigma
    # in bins of the probability too
    t = calibration_in_bins(p, acc, {"p": (p, np.linspace(0, 1, 6))}, min_count=100)
    from scipy import stats
    assert stats.chi2.sf(t.chi2, t.ndf) > 1e-3, t.format()
    # processing events 1000..1999 alone gives the same draws
    sub_parts, sub_verts = parts.select_events(np.arange(1000, 2000)), verts.select_events(np.arange(1000, 2000))
    out2 = alg.execute(ctx_for(alg, np.arange(1000, 2000)), Particles=sub_parts, Vertices=sub_verts)
    half = out.offsets[1000]
    np.testing.assert_array_equal(out["accepted"][half:], out2["accepted"])
    np.testing.assert_array_equal(out["acceptance_prob"][half:], out2["acceptance_prob"])


def _copy_model(tmp_path, name, edit):
    src = fake_app().model_svc.load(f"models/{name}.onnx").path
    dst = tmp_path / f"{name}.onnx"
    shutil.copy(src, dst)
    card = yaml.safe_load(src.with_suffix(".yaml").read_text())
    edit(card)
    dst.with_suffix(".yaml").write_text(yaml.safe_dump(card))
    return str(dst)


def test_model_card_mismatch_raises_at_initialize(tmp_path):
    path = _copy_model(tmp_path, "trk2016_acceptance", lambda c: c["inputs"].pop())   # 11 inputs
    with pytest.raises(ConfigurationError, match="does not match its card"):
        make_alg(Model=path)
    (tmp_path / "b").mkdir()
    path = _copy_model(tmp_path / "b", "trk2016_acceptance",
                       lambda c: c["inputs"].__setitem__(2, {"name": "ctb_z", "unit": "mm"}))
    with pytest.raises(ConfigurationError, match="tracking features"):
        make_alg(Model=path)
    (tmp_path / "c").mkdir()
    path = _copy_model(tmp_path / "c", "trk2016_acceptance", lambda c: c.__setitem__("conditions", "2018-MagDown"))
    with pytest.raises(ConfigurationError, match="conditions"):
        make_alg(Model=path)
    with pytest.raises(ConfigurationError, match="not found"):
        make_alg(Model=str(tmp_path / "missing.onnx"))
    card = yaml.safe_load(open(fake_app().model_svc.load("models/trk2016_acceptance.onnx").path.with_suffix(".yaml")))
    assert [i["name"] for i in card["inputs"]] == FEATURE_NAMES
    assert "GPL-3.0-or-later" == card["training"]["license"] and "not LHCb data" in card["training"]["provenance"]
