"""Write reference-detector (teacher) PID training samples — NOT LHCb data.

    python -m models.training.pid.make_teacher_samples --output teacher.root --n 1000000
    python -m models.training.pid.make_teacher_samples --train-probnn      # refit the teacher ProbNN

One TTree ``TeacherPID`` (uproot ``mktree``, ZSTD): p [MeV], eta, phi, nTracks, charge, pid (true
species), and every teacher output (RichDLLe/mu/K/p, hasRich, isMuon, InMuonAcc, MuonMuLL, MuonBkgLL,
PIDe/mu/K/p, ProbNNe/mu/pi/k/p/ghost).  Kinematics: the b-decay-like spectrum of
``algorithms.pid.teacher.sampling``; species mixed with equal fractions unless --fractions is given.
Every row is its own counter-RNG key (row number), so any chunking gives the same file content.
Training data is never committed: regenerate it with this command.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from algorithms.pid.teacher.probnn import WEIGHTS_FILE, ProbNN, probnn_features, train_probnn
from algorithms.pid.teacher.sampling import SPECIES_PDG, sample_ntracks, sample_tracks
from algorithms.pid.teacher.teacher import OUTPUT_COLUMNS, teacher_response
from framework.random import RandomStreams

TREE = "TeacherPID"
LABEL = "reference detector (teacher), not LHCb data"
SPECIES = ("e", "mu", "pi", "K", "p")


def species_for_rows(rows, fractions, seed):
    u = RandomStreams(seed, 0, "PIDTeacherSpecies").uniform(rows, 0)
    cdf = np.cumsum(fractions) / np.sum(fractions)
    idx = np.minimum(np.searchsorted(cdf, u, side="right"), len(SPECIES) - 1)
    return np.array([SPECIES_PDG[s] for s in SPECIES], dtype=np.int64)[idx]


def respond(s, key, probnn):
    """The teacher's outputs for the tracks ``s`` (a :func:`sample_tracks` dict) with the random key ``key``."""
    return teacher_response(s["pid"], s["p"], s["x"], s["y"], s["z"], s["tx"], s["ty"], s["charge"], s["nTracks"],
                            s["prod_z"], s["event"], s["index"], key, eta=s["eta"], probnn=probnn)


def make_chunk(first_row, n, fractions, seed, key, probnn):
    rows = np.arange(first_row, first_row + n, dtype=np.int64)
    s = sample_tracks(n, species_for_rows(rows, fractions, seed), seed=seed, first_row=first_row)
    return s, respond(s, key, probnn)


def to_branches(s, out):
    b = {"p": s["p"].astype(np.float32), "eta": s["eta"].astype(np.float32), "phi": s["phi"].astype(np.float32),
         "nTracks": s["nTracks"].astype(np.float32), "charge": s["charge"].astype(np.int8), "pid": s["pid"].astype(np.int32)}
    for c in OUTPUT_COLUMNS:
        v = np.asarray(out[c])
        b[c] = v.astype(np.bool_) if v.dtype == np.bool_ else v.astype(np.float32)
    return b


def fit_probnn(n_rows, seed, key):
    """Fit the teacher ProbNN on n_rows fresh rows (row numbers offset so they never overlap samples)."""
    first = 10**12
    s, out = make_chunk(first, n_rows, np.ones(5), seed, key, probnn=False)
    x = probnn_features(out, s["p"], s["eta"], s["nTracks"])
    labels = np.searchsorted(np.array([11, 13, 211, 321, 2212]), np.abs(s["pid"]))
    params = train_probnn(x, labels, seed=seed)
    params["training"] = {"rows": int(n_rows), "seed": int(seed), "priors": "flat (equal species fractions)",
                          "label": LABEL, "command": "python -m models.training.pid.make_teacher_samples --train-probnn"}
    return params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="teacher.root")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=20240607)
    ap.add_argument("--fractions", default="1,1,1,1,1", help="relative fractions of e,mu,pi,K,p")
    ap.add_argument("--chunk", type=int, default=200_000)
    ap.add_argument("--train-probnn", action="store_true", help=f"refit and overwrite {WEIGHTS_FILE.name}, then exit")
    ap.add_argument("--probnn-rows", type=int, default=300_000)
    a = ap.parse_args(argv)
    key = RandomStreams(a.seed, 0, "PIDTeacher").key_for(0)
    if a.train_probnn:
        t0 = time.time()
        params = fit_probnn(a.probnn_rows, a.seed, key)
        WEIGHTS_FILE.write_text(json.dumps(params))
        print(f"wrote {WEIGHTS_FILE} (validation accuracy {params['validation_score']:.4f}, {time.time() - t0:.0f} s)")
        return 0
    fr = np.array([float(v) for v in a.fractions.split(",")])
    if fr.shape != (5,) or np.any(fr < 0) or fr.sum() <= 0:
        raise SystemExit(f"--fractions: expected 5 non-negative numbers for e,mu,pi,K,p, got {a.fractions!r}")
    import uproot
    probnn = ProbNN.default()
    _, nt_desc = sample_ntracks(np.array([0.5]))
    t0 = time.time()
    with uproot.recreate(a.output, compression=uproot.ZSTD(5)) as f:
        tree = None
        for first in range(0, a.n, a.chunk):
            n = min(a.chunk, a.n - first)
            s, out = make_chunk(first, n, fr, a.seed, key, probnn)
            b = to_branches(s, out)
            if tree is None:
                tree = f.mktree(TREE, {k: v.dtype for k, v in b.items()}, title=f"PID teacher samples: {LABEL}")
            tree.extend(b)
            print(f"  {first + n}/{a.n} rows ({time.time() - t0:.0f} s)", file=sys.stderr)
        f["provenance"] = json.dumps({"label": LABEL, "seed": a.seed, "fractions": fr.tolist(), "ntracks": nt_desc,
                                      "spectrum": "algorithms.pid.teacher.sampling.BDecaySpectrum defaults",
                                      "command": " ".join(["python -m models.training.pid.make_teacher_samples"] + (argv or sys.argv[1:]))})
    print(f"wrote {a.n} rows to {a.output} in {time.time() - t0:.0f} s ({LABEL})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
