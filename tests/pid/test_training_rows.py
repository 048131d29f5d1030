"""Extra training rows simulated with the teacher (models/training/pid/flash_common.py): they must be
the teacher's own rows of the species, at row numbers no sample, fit or test uses.  No torch needed."""
import json
from pathlib import Path

import numpy as np
import pytest

from algorithms.pid.features import GLOBALPID_OUTPUTS
from framework.random import RandomStreams

MODELS = Path(__file__).resolve().parents[2] / "models"


def teacher_sample_and_models(tmp_path, species: str, n: int, seed: int):
    """A teacher sample of ``n`` rows of one species, its rows 0, 2, 4, ... as held-out rows and the shipped
    models of the species: (path, sample, held-out rows, models)."""
    from algorithms.pid.features import MODEL_KINDS, SPECIES
    from models.training.pid.flash_common import load_sample
    from models.training.pid.make_teacher_samples import main as make_main
    from models.training.pid.train_flash_pid import load_models

    path = tmp_path / f"teacher_{species}.root"
    fractions = ",".join("1" if s == species else "0" for s in SPECIES)
    assert make_main(["--output", str(path), "--n", str(n), "--fractions", fractions, "--chunk", str(n),
                      "--seed", str(seed)]) == 0
    models = load_models({k: MODELS / f"pid2016_{k}_{species}.onnx" for k in MODEL_KINDS})
    return path, load_sample(path), np.arange(0, n, 2), models


def test_teacher_global_rows_are_the_teachers_rows_with_its_probnn():
    """teacher_global_rows: all fresh tracks of the species with the sample's columns (the teacher's
    combined DLLs and ProbNN are the targets), row for row equal to what the sample writer produces
    for the same row numbers, in a range disjoint from every other use."""
    from algorithms.pid.teacher.probnn import ProbNN
    from models.training.pid.flash_common import (GLOBAL_EXTRA_ROWS_BASE, RICH_EXTRA_ROWS_BASE, columns_for,
                                                  teacher_global_rows)
    from models.training.pid.make_teacher_samples import SPECIES as WRITER_SPECIES, make_chunk, to_branches

    seed, first, n = 20240607, 9_300_000_000, 2500
    r = teacher_global_rows("mu", n, seed=seed, chunk=1000, first_row=first)   # 3 chunks
    assert r["simulated"] == n and r["first_row"] == first
    key = RandomStreams(seed, 0, "PIDTeacher").key_for(0)
    b = to_branches(*make_chunk(first, n, np.array([0.0, 1.0, 0.0, 0.0, 0.0]), seed, key, ProbNN.default()))
    assert np.all(np.abs(b["pid"]) == 13)
    b["weight"] = np.ones(n)
    want = columns_for(b, np.arange(n))
    for k in ("kin", "gx", "gy", "w", "hasRich", "isMuon", "InMuonAcc"):
        np.testing.assert_array_equal(r[k], want[k], err_msg=k)
    names = [c for c, _, _ in GLOBALPID_OUTPUTS]
    pnn = r["gy"][:, names.index("ProbNNmu")]
    assert 0.8 < np.mean(pnn > 0.5) < 0.97          # muons: the teacher's ProbNNmu, not a placeholder
    assert np.all(np.isfinite(r["gy"]))
    # default range: 5e12 + species * 1e10, above the RICH extra rows (4e12 + ...) and below 6e12
    assert teacher_global_rows("p", 5, seed=seed)["first_row"] == GLOBAL_EXTRA_ROWS_BASE + WRITER_SPECIES.index("p") * 10**10
    assert GLOBAL_EXTRA_ROWS_BASE >= RICH_EXTRA_ROWS_BASE + len(WRITER_SPECIES) * 10**10
    assert GLOBAL_EXTRA_ROWS_BASE + len(WRITER_SPECIES) * 10**10 <= 6 * 10**12
    # the classifier's extra rows (--ismuon-extra-tracks): the same rows from 6e12 + species * 1e10 on
    from models.training.pid.flash_common import ISMUON_EXTRA_ROWS_BASE

    rc = teacher_global_rows("p", 5, seed=seed, base=ISMUON_EXTRA_ROWS_BASE)
    assert rc["first_row"] == 6 * 10**12 + WRITER_SPECIES.index("p") * 10**10
    assert ISMUON_EXTRA_ROWS_BASE >= GLOBAL_EXTRA_ROWS_BASE + len(WRITER_SPECIES) * 10**10
    assert set(rc["classes"].tolist()) <= set(range(6))


def test_extra_teacher_rows_are_refused_for_calibration_files():
    """Every option that simulates teacher rows names itself when given a calibration file."""
    import argparse

    from models.training.pid.train_flash_pid import require_teacher_sample

    require_teacher_sample(argparse.Namespace(weight_branch=None, species_name=None), "--x")   # teacher file: fine
    for ns in (argparse.Namespace(weight_branch="sw", species_name=None),
               argparse.Namespace(weight_branch=None, species_name="K")):
        with pytest.raises(SystemExit, match="--ismuon-extra-tracks simulates teacher rows"):
            require_teacher_sample(ns, "--ismuon-extra-tracks")


def test_teacher_baseline_is_the_teacher_against_its_own_sample(tmp_path):
    """validation.teacher_baseline: the teacher re-run on the held-out rows' own tracks with independent
    streams, scored like a flash model.  It must first reproduce the reference exactly with the file's
    key (else: not available, with the reason), and a perfect model passes nearly every bin."""
    from models.training.pid.flash_common import load_sample
    from models.training.pid.make_teacher_samples import main as make_main
    from models.training.pid.train_flash_pid import ntracks_edges, teacher_baseline, teacher_on_rows

    path = tmp_path / "teacher_pi.root"
    assert make_main(["--output", str(path), "--n", "12000", "--fractions", "0,0,1,0,0", "--chunk", "5000",
                      "--seed", "77"]) == 0
    d = load_sample(path)
    va = np.arange(1, 12000, 2)                     # any subset of rows
    ref = teacher_on_rows(d, va)
    kin = np.stack([d["p"][va], d["eta"][va], d["nTracks"][va]], 1).astype(np.float64)
    w = d["weight"][va]
    b = teacher_baseline(path, d, va, ref, kin, w, ntracks_edges(d), 2)
    assert b["available"], b
    assert b["rates_all_bins"] > 50
    assert b["rates_all_bins_pass"] >= 0.9 * b["rates_all_bins"]
    assert "rates_all_bins_pass_streams" not in b            # one set of streams: no spread to report
    gi = b["given_inputs"]                                  # hidden track variables redrawn per replica
    assert gi["rates_all_bins"] == b["rates_all_bins"] and gi["rates_all_bins_pass"] >= 0.85 * gi["rates_all_bins"]
    assert "phi" in gi["method"] and "rates_all_bins_pass_streams" not in gi
    # further independent stream sets: the first set is the one above, each set is the teacher again
    b4 = teacher_baseline(path, d, va, ref, kin, w, ntracks_edges(d), 2, stream_sets=4)
    st = b4["rates_all_bins_pass_streams"]
    assert b4["rates_all_bins_pass"] == st["bins_pass"][0] == b["rates_all_bins_pass"]
    assert st["stream_sets"] == len(st["bins_pass"]) == 4
    assert all(n >= 0.9 * b["rates_all_bins"] for n in st["bins_pass"])
    assert st["mean"] == pytest.approx(np.mean(st["bins_pass"]), abs=0.01)
    assert st["std"] == pytest.approx(np.std(st["bins_pass"], ddof=1), abs=0.01)
    gst = b4["given_inputs"]["rates_all_bins_pass_streams"]
    assert gst["stream_sets"] == 4 and gst["bins_pass"][0] == gi["rates_all_bins_pass"]
    # a reference the teacher does not reproduce (here: one value changed) gets no baseline
    ref2 = dict(ref, PIDK=np.where(np.arange(va.size) == 7, 99.0, ref["PIDK"]))
    b2 = teacher_baseline(path, d, va, ref2, kin, w, ntracks_edges(d), 2)
    assert not b2["available"] and "PIDK" in b2["why"]
    # a file without the writer's provenance (e.g. a calibration sample)
    import uproot

    other = tmp_path / "calib.root"
    with uproot.recreate(other) as f:
        f.mktree("T", {"p": np.float32})
    b3 = teacher_baseline(other, d, va, ref, kin, w, ntracks_edges(d), 2)
    assert not b3["available"] and "provenance" in b3["why"]


def test_hidden_stream_redraws_only_the_variables_the_flash_is_not_given():
    """sample_tracks(hidden_stream=k): the rows' p, eta, charge, nTracks and species, with the azimuth and
    the origin z0 from stream k (reproducible, distributed as the rows' own); the teacher's hasRich on
    such tracks is a new draw from the same rate (it depends on the direction, not on the inputs alone)."""
    from scipy import stats

    from algorithms.pid.teacher.probnn import ProbNN
    from algorithms.pid.teacher.sampling import sample_tracks
    from models.training.pid.make_teacher_samples import respond, to_branches

    rows = np.arange(5_000, 45_000)
    a = sample_tracks(0, "pi", seed=5, rows=rows)
    b = sample_tracks(0, "pi", seed=5, rows=rows, hidden_stream=3)
    for k in ("p", "eta", "charge", "nTracks", "pid", "event", "index"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert np.all(a["phi"] != b["phi"]) and np.all(a["z"] != b["z"])
    np.testing.assert_array_equal(b["phi"], sample_tracks(0, "pi", seed=5, rows=rows, hidden_stream=3)["phi"])
    assert np.all(b["phi"] != sample_tracks(0, "pi", seed=5, rows=rows, hidden_stream=4)["phi"])
    np.testing.assert_allclose(np.hypot(a["tx"], a["ty"]), np.hypot(b["tx"], b["ty"]), rtol=1e-12)
    assert stats.ks_2samp(a["phi"], b["phi"]).pvalue > 1e-3 and stats.ks_2samp(a["z"], b["z"]).pvalue > 1e-3
    key, probnn = np.uint64(12345), ProbNN.default()
    ha = to_branches(a, respond(a, key, probnn))["hasRich"].astype(bool)
    hb = to_branches(b, respond(b, key, probnn))["hasRich"].astype(bool)
    assert (ha != hb).sum() > 100                            # the flag depends on the redrawn direction
    pa, pb = ha.mean(), hb.mean()
    assert abs(pa - pb) < 4 * np.sqrt(2 * pa * (1 - pa) / rows.size)   # same rate given the inputs


def test_validation_scores_the_flash_with_further_noise_streams(tmp_path):
    """--validation-streams: the flash replicas drawn again with further independent noise streams and
    scored on the same reference rows; the first set is the card's own score, and the other sets are
    different draws of the same shipped models (the card's figure has a spread, and it is reported)."""
    from models.training.pid.train_flash_pid import flash_on_rows, parse_args, pass_over_streams, validate_species

    path, d, va, models = teacher_sample_and_models(tmp_path, "pi", 6000, 78)
    a = parse_args(["--input", str(path), "--species", "pi", "--validation-streams", "3", "--replicas", "2",
                    "--c2st-rows", "2000"])
    v, rates = validate_species(models, d, va, "pi", a)
    st = v["rates_all_bins_pass_streams"]
    assert st["stream_sets"] == 3 and st["bins_pass"][0] == v["rates_all_bins_pass"]
    assert v["teacher_baseline"]["rates_all_bins_pass_streams"]["stream_sets"] == 3
    assert v["teacher_baseline"]["given_inputs"]["rates_all_bins_pass_streams"]["stream_sets"] == 3
    # the second set is replicas 2, 3: independent of the first set's replicas 0, 1
    g1 = flash_on_rows(models, 2, d, va, replica=1)["RichDLLK"]
    g2 = flash_on_rows(models, 2, d, va, replica=2)["RichDLLK"]
    assert not np.array_equal(g1, g2)
    assert pass_over_streams([rates, rates])["std"] == 0.0
    a1 = parse_args(["--input", str(path), "--species", "pi", "--validation-streams", "1", "--replicas", "2",
                     "--c2st-rows", "2000"])
    v1, _ = validate_species(models, d, va, "pi", a1)
    assert "rates_all_bins_pass_streams" not in v1 and v1["rates_all_bins_pass"] == v["rates_all_bins_pass"]


def test_attribution_replaces_one_teacher_stage_at_a_time(tmp_path):
    """models.training.pid.attribution: the validation's score with the teacher's outputs replaced stage by
    stage by the flash models'.  Its end points are the validation's own figures (the teacher baselines and
    the flash), the stages that keep the teacher's flags reproduce them exactly, and flash_pid_response(given=)
    feeds the given stage outputs to the next models."""
    from algorithms.pid.features import globalpid_features, kinematic_features
    from algorithms.pid.flash import draw_normal
    from models.training.pid.attribution import STAGES, attribution, format_table, main, teacher_stage_outputs
    from models.training.pid.train_flash_pid import (TeacherReplicas, flash_on_rows, ntracks_edges, parse_args,
                                                     rate_table, teacher_baseline, teacher_on_rows,
                                                     training_and_held_out_rows)

    path, d, va, models = teacher_sample_and_models(tmp_path, "K", 8000, 79)
    res = attribution(models, d, va, "K", path, replicas=2, sets=2)
    st = res["stages"]
    assert list(st) == list(STAGES) and res["rows"] == va.size
    ref = teacher_on_rows(d, va)
    kin = np.stack([d["p"][va], d["eta"][va], d["nTracks"][va]], 1).astype(np.float64)
    w, nt = d["weight"][va], ntracks_edges(d)
    b = teacher_baseline(path, d, va, ref, kin, w, nt, 2, stream_sets=2)
    assert st["teacher"]["bins"] - st["teacher"]["fails"] == b["rates_all_bins_pass_streams"]["mean"]
    gi = b["given_inputs"]["rates_all_bins_pass_streams"]["mean"]
    assert st["teacher|inputs"]["bins"] - st["teacher|inputs"]["fails"] == gi
    flash = [rate_table(ref, [flash_on_rows(models, 3, d, va, replica=k * 2 + r) for r in range(2)], kin, w, nt)
             for k in range(2)]
    assert st["flash"]["fails"] == pytest.approx(np.mean([sum(v["bins"] - v["bins_pass"] for v in t.values())
                                                          for t in flash]))
    for stage in ("teacher", "globalpid", "+rich", "+muon"):   # the reference's own flags
        assert st[stage]["per_cut"]["hasRich"]["chi2"] == 0 and st[stage]["per_cut"]["InMuonAcc"]["chi2"] == 0
    assert st["flash"]["per_cut"]["hasRich"]["chi2"] > 0 and st["teacher|inputs"]["per_cut"]["hasRich"]["chi2"] > 0
    assert "added failing pairs" in format_table(res)
    for v in st.values():   # the failing pairs split by kind and direction
        assert sum(v["fails_by_direction"].values()) == pytest.approx(v["fails"], abs=0.02)
    # given stages: the RICH DLLs are the teacher replica's, the GlobalPID model runs on them
    t = TeacherReplicas(path, va, ref).run(0)
    g = teacher_stage_outputs(t)
    o = flash_on_rows(models, 3, d, va, replica=0, given=g)
    np.testing.assert_array_equal(o["RichDLLK"], np.asarray(t["RichDLLK"], np.float32))
    np.testing.assert_array_equal(o["hasRich"], t["hasRich"])
    o2 = flash_on_rows(models, 3, d, va, replica=0, given={"flags": g["flags"], "muon": g["muon"]})
    assert not np.array_equal(o2["RichDLLK"], o["RichDLLK"])
    kf = kinematic_features(d["p"][va], d["eta"][va], d["nTracks"][va], d["charge"][va])
    gp = models["globalpid"].run(globalpid_features(kf, g["rich"].astype(np.float32), t["isMuon"],
                                                    g["muon"].astype(np.float32), t["hasRich"], t["InMuonAcc"]),
                                 draw_normal(np.uint64(0x5EED0000 + 17 * 3), va.astype(np.int64),
                                             np.zeros(va.size, np.int64), 10))
    np.testing.assert_allclose(o["PIDK"], gp[:, 1], rtol=1e-6)
    # the command line: a report per species
    assert main(["--input", str(path), "--species", "K", "--sets", "1", "--replicas", "2",
                 "--report", str(tmp_path / "a.json")]) == 0
    assert set(json.loads((tmp_path / "a.json").read_text())["K"]["stages"]) == set(STAGES)
    n_val = training_and_held_out_rows(d, 3, parse_args(["--input", str(path)]))[1].size   # the validation's rows
    assert json.loads((tmp_path / "a.json").read_text())["K"]["rows"] == n_val < 2500
    # other held-out rows (e.g. all of a second sample): --validation-fraction, --max-validation-rows
    assert main(["--input", str(path), "--species", "K", "--sets", "1", "--replicas", "2", "--validation-fraction",
                 "0.9", "--max-validation-rows", "5000", "--report", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["K"]["rows"] == 5000


def test_momentum_step_options_are_checked(capsys):
    """--clf-p-steps / --muon-p-steps: comma-separated positive momenta in GeV, increasing; anything else is
    refused with the option and what was expected."""
    from models.training.pid.train_flash_pid import parse_args

    a = parse_args(["--input", "x.root", "--clf-p-steps", "3,6,10", "--muon-p-steps", "6,10"])
    assert a.clf_p_steps == (3.0, 6.0, 10.0) and a.muon_p_steps == (6.0, 10.0)
    assert parse_args(["--input", "x.root"]).clf_p_steps == ()
    for bad, why in (("10,6", "increasing"), ("3,six", "comma-separated momenta in GeV"), ("0,3", "positive")):
        with pytest.raises(SystemExit):
            parse_args(["--input", "x.root", "--clf-p-steps", bad])
        err = capsys.readouterr().err
        assert "--clf-p-steps" in err and why in err, err
