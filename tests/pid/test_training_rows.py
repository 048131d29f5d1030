"""Extra training rows simulated with the teacher (models/training/pid/flash_common.py): they must be
the teacher's own rows of the species, at row numbers no sample, fit or test uses.  No torch needed."""
from pathlib import Path

import numpy as np
import pytest

from algorithms.pid.features import GLOBALPID_OUTPUTS
from framework.random import RandomStreams

MODELS = Path(__file__).resolve().parents[2] / "models"


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
    # further independent stream sets: the first set is the one above, each set is the teacher again
    b4 = teacher_baseline(path, d, va, ref, kin, w, ntracks_edges(d), 2, stream_sets=4)
    st = b4["rates_all_bins_pass_streams"]
    assert b4["rates_all_bins_pass"] == st["bins_pass"][0] == b["rates_all_bins_pass"]
    assert st["stream_sets"] == len(st["bins_pass"]) == 4
    assert all(n >= 0.9 * b["rates_all_bins"] for n in st["bins_pass"])
    assert st["mean"] == pytest.approx(np.mean(st["bins_pass"]), abs=0.01)
    assert st["std"] == pytest.approx(np.std(st["bins_pass"], ddof=1), abs=0.01)
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


def test_validation_scores_the_flash_with_further_noise_streams(tmp_path):
    """--validation-streams: the flash replicas drawn again with further independent noise streams and
    scored on the same reference rows; the first set is the card's own score, and the other sets are
    different draws of the same shipped models (the card's figure has a spread, and it is reported)."""
    from models.training.pid.flash_common import load_sample
    from models.training.pid.make_teacher_samples import main as make_main
    from models.training.pid.train_flash_pid import (flash_on_rows, load_models, parse_args, pass_over_streams,
                                                     validate_species)
    from algorithms.pid.features import MODEL_KINDS

    path = tmp_path / "teacher_pi.root"
    assert make_main(["--output", str(path), "--n", "6000", "--fractions", "0,0,1,0,0", "--chunk", "6000",
                      "--seed", "78"]) == 0
    d = load_sample(path)
    va = np.arange(0, 6000, 2)
    models = load_models({k: MODELS / f"pid2016_{k}_pi.onnx" for k in MODEL_KINDS})
    a = parse_args(["--input", str(path), "--species", "pi", "--validation-streams", "3", "--replicas", "2",
                    "--c2st-rows", "2000"])
    v, rates = validate_species(models, d, va, "pi", a)
    st = v["rates_all_bins_pass_streams"]
    assert st["stream_sets"] == 3 and st["bins_pass"][0] == v["rates_all_bins_pass"]
    assert v["teacher_baseline"]["rates_all_bins_pass_streams"]["stream_sets"] == 3
    # the second set is replicas 2, 3: independent of the first set's replicas 0, 1
    g1 = flash_on_rows(models, 2, d, va, replica=1)["RichDLLK"]
    g2 = flash_on_rows(models, 2, d, va, replica=2)["RichDLLK"]
    assert not np.array_equal(g1, g2)
    assert pass_over_streams([rates, rates])["std"] == 0.0
    a1 = parse_args(["--input", str(path), "--species", "pi", "--validation-streams", "1", "--replicas", "2",
                     "--c2st-rows", "2000"])
    v1, _ = validate_species(models, d, va, "pi", a1)
    assert "rates_all_bins_pass_streams" not in v1 and v1["rates_all_bins_pass"] == v["rates_all_bins_pass"]
