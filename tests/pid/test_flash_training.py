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
