"""Minimum-bias nTracks histogram (2016 MagUp, 13 TeV) for particle-gun occupancy.

    python -m models.training.tracking.make_minbias_occupancy [--crossings 2000] [--seed 1]

Pythia 8 ``SoftQCD:nonDiffractive`` at 13 TeV; per bunch crossing a zero-truncated Poisson number
of collisions with mean parameter 1.1 (2016 visible collisions; crossings without a collision are
not recorded), each at a vertex drawn from the 2016 luminous region; final-state charged e, mu,
pi, K, p go through the *runtime* acceptance and efficiency models
(``models/trk2016_{acceptance,efficiency}.onnx``, same features and draws as the algorithms), and
nTracks = number of reconstructed long + upstream + downstream tracks (the RecSummary definition).
Writes ``models/occupancy/minbias_ntracks_2016-MagUp-13TeV.yaml``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import yaml

from algorithms.tracking.efficiency import draw_track_type
from algorithms.tracking.features import acceptance_features, in_domain, is_tracked_species
from framework.models import ModelSvc
from framework.random import RandomStreams

REPO = Path(__file__).resolve().parents[3]
OUT = REPO / "models" / "occupancy" / "minbias_ntracks_2016-MagUp-13TeV.yaml"
BEAM_MEAN = np.array([0.83, -0.17, 0.0])
BEAM_SIGMA = np.array([0.03, 0.025, 45.0])
MU = 1.1


def generate(n_collisions: int, seed: int):
    """Flattened final-state particles of ``n_collisions`` Pythia events: (collision index, pid,
    px, py, pz [MeV], production x, y, z [mm] relative to the collision point)."""
    import awkward as ak
    import pythia8mc

    py = pythia8mc.Pythia("", False)
    for s in ("Beams:eCM = 13000.", "SoftQCD:nonDiffractive = on", "Random:setSeed = on", f"Random:seed = {seed}",
              "Next:numberCount = 0", "Next:numberShowEvent = 0", "Next:numberShowInfo = 0",
              "Next:numberShowProcess = 0", "Init:showChangedSettings = off", "Init:showProcesses = off",
              "Init:showMultipartonInteractions = off", "Init:showChangedParticleData = off", "Print:quiet = on"):
        if not py.readString(s):
            raise RuntimeError(f"Pythia rejected setting {s!r}")
    if not py.init():
        raise RuntimeError("Pythia init failed")
    events = py.nextBatch(n_collisions)
    if len(events) != n_collisions:
        raise RuntimeError(f"Pythia returned {len(events)} events instead of {n_collisions}")
    prt = events.prt
    final = prt.status > 0
    counts = ak.to_numpy(ak.sum(final, axis=1))
    sel = prt[final]
    flat = lambda a: ak.to_numpy(ak.flatten(a)).astype(np.float64)  # noqa: E731
    vprod = sel.vProd
    vx = ak.fill_none(vprod.px, 0.0)
    vy = ak.fill_none(vprod.py, 0.0)
    vz = ak.fill_none(vprod.pz, 0.0)
    return (np.repeat(np.arange(n_collisions), counts), ak.to_numpy(ak.flatten(sel.id)).astype(np.int32),
            1e3 * flat(sel.p.px), 1e3 * flat(sel.p.py), 1e3 * flat(sel.p.pz), flat(vx), flat(vy), flat(vz))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crossings", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--output", default=str(OUT))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    # zero-truncated Poisson(1.1) collisions per crossing
    n_coll = rng.poisson(MU, size=4 * args.crossings)
    n_coll = n_coll[n_coll > 0][: args.crossings]
    total = int(n_coll.sum())
    coll, pid, px, py, pz, ox, oy, oz = generate(total, args.seed)
    crossing_of_coll = np.repeat(np.arange(args.crossings), n_coll)
    pv = BEAM_MEAN + BEAM_SIGMA * rng.normal(size=(total, 3))
    x, y, z = ox + pv[coll, 0], oy + pv[coll, 1], oz + pv[coll, 2]
    crossing = crossing_of_coll[coll]
    cand = is_tracked_species(pid)
    feats = acceptance_features(pid[cand], x[cand], y[cand], z[cand], px[cand], py[cand], pz[cand])
    ok = in_domain(feats, pz[cand])
    svc = ModelSvc(threads=1)
    acc_model = svc.load("models/trk2016_acceptance.onnx")
    eff_model = svc.load("models/trk2016_efficiency.onnx")
    cross_c = crossing[cand]
    index_c = np.arange(len(pid))[cand] - np.searchsorted(crossing, cross_c)  # index within the crossing
    streams_a = RandomStreams(args.seed, 0, "MinBiasOccupancy/Acceptance")
    streams_e = RandomStreams(args.seed, 0, "MinBiasOccupancy/Efficiency")
    prob = np.zeros(len(feats), dtype=np.float32)
    prob[ok] = acc_model.run(feats[ok])[:, 0]
    accepted = ok & (streams_a.uniform(cross_c, index_c) < prob)
    ttype = np.full(len(feats), -1, dtype=np.int8)
    idx = np.flatnonzero(accepted)
    probs = eff_model.run(feats[idx])
    ttype[idx] = draw_track_type(probs, streams_e.uniform(cross_c[idx], index_c[idx]))
    reco = ttype >= 3
    ntracks = np.bincount(cross_c[reco], minlength=args.crossings)
    edges = np.arange(0, max(int(ntracks.max()) + 10, 50) + 1, 5)
    counts, _ = np.histogram(ntracks, bins=edges)
    doc = {
        "variable": "nTracks",
        "definition": "number of reconstructed long + upstream + downstream tracks per recorded bunch crossing "
                      "(RecSummary nTracks of this flash simulation; LHCb's nTracks also counts VELO and T tracks)",
        "conditions": "2016-MagUp-13TeV",
        "bin_edges": [int(e) for e in edges],
        "counts": [int(c) for c in counts],
        "n_crossings": int(args.crossings),
        "mean": float(ntracks.mean()),
        "std": float(ntracks.std()),
        "quantiles": {q: float(np.quantile(ntracks, float(q))) for q in ("0.1", "0.5", "0.9", "0.99")},
        "provenance": (
            f"Pythia {_pythia_version()} SoftQCD:nonDiffractive pp at 13 TeV, zero-truncated Poisson({MU}) collisions "
            "per crossing, vertices from the 2016 luminous region N((0.83, -0.17, 0), (0.03, 0.025, 45) mm), "
            "final-state e/mu/pi/K/p through flashsim's trk2016_acceptance and trk2016_efficiency models "
            "(re-learned from LHCb's public Lamarr 2016 MagUp parametrisation; not LHCb data)"),
        "license": "GPL-3.0-or-later",
        "models": {m.name: m.sha256 for m in (acc_model, eff_model)},
        "command": f"python -m models.training.tracking.make_minbias_occupancy --crossings {args.crossings} "
                   f"--seed {args.seed}",
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(doc, sort_keys=False, width=110, default_flow_style=None))
    print(f"{args.crossings} crossings ({total} collisions): nTracks mean {ntracks.mean():.1f}, "
          f"std {ntracks.std():.1f}, median {np.median(ntracks):.0f}; wrote {out} in {doc['seconds']} s")


def _pythia_version():
    try:
        import importlib.metadata as md

        return md.version("pythia8mc")
    except Exception:
        return "8.3"


if __name__ == "__main__":
    main()
