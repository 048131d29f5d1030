"""Full-chain benchmarks through the real application manager: per-stage table and ONNX share.

* flagship: options/Bu2JpsiK_pgun.yaml (gun → tracking → PID → combine → DTF → ntuples)
  goal ≥ 20 000 events/s on one core;
* tracking on the real LHCb HepMC events (needs ../shared): MC-particle selection through
  covariance, goal ≤ 1.6 ms/event (100× SQLamarr's 162 ms/event).

Run: python benchmarks/bench_chain.py [--events N] [--only flagship|hepmc]
A warm-up job runs first so numba compilation (cached on disk) is not timed.
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from framework.appmgr import ApplicationMgr  # noqa: E402
from framework.options import load_options  # noqa: E402
from framework.registry import Plugins  # noqa: E402


def run_job(options, overrides, plugins):
    app = ApplicationMgr(load_options(options), overrides, plugins, stream=io.StringIO())
    t0 = time.perf_counter()
    summary = app.run()
    wall = time.perf_counter() - t0
    onnx = sum(m.seconds for m in app.model_svc.models.values())
    return app, summary, wall, onnx


def table(title, app, summary, wall, onnx, n_events, per=None):
    print(f"\n## {title}")
    print(f"{'stage':<24} {'total (s)':>9} {'µs/event':>10} {'share':>7}" + (f" {'µs/' + per[0]:>12}" if per else ""))
    for name, t in summary["timing"].items():
        extra = f" {1e6 * t['total_s'] / max(per[1], 1):>12.3f}" if per else ""
        print(f"{name:<24} {t['total_s']:>9.3f} {1e6 * t['total_s'] / n_events:>10.2f} {100 * t['share']:>6.1f}%{extra}")
    algs = sum(t["total_s"] for t in summary["timing"].values())
    print(f"{'all algorithms':<24} {algs:>9.3f} {1e6 * algs / n_events:>10.2f}")
    print(f"events/s (wall, incl. output): {n_events / wall:,.0f}   ONNX Runtime share of algorithm time: "
          f"{100 * onnx / max(algs, 1e-12):.1f}%   peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return algs


def flagship(n, plugins, tmp):
    opts = [REPO / "options" / "Bu2JpsiK_pgun.yaml"]
    base = [f"ApplicationMgr.Output={tmp}/flagship.root", "ApplicationMgr.ProgressInterval=0"]
    run_job(opts, base + ["ApplicationMgr.EvtMax=2000"], plugins)  # warm-up (numba cache, model load)
    app, summary, wall, onnx = run_job(opts, base + [f"ApplicationMgr.EvtMax={n}"], plugins)
    table(f"flagship B+ → J/ψ K+ particle gun, {n} events, batch {app.BatchSize}", app, summary, wall, onnx, n)


def hepmc(plugins, tmp):
    shared = Path(os.environ.get("FLASHSIM_SHARED", REPO.parent / "shared")) / "data" / "hepmc" / "DSt_Pi"
    if not shared.exists():
        print(f"\n## LHCb HepMC tracking: skipped ({shared} not available)")
        return
    opts = [REPO / "options" / "tracking" / "hepmc_lhcb_tracks.yaml"]
    base = [f"ApplicationMgr.Output={tmp}/hepmc.root", "Generation.Input=['" + str(shared / "evt*.mc2") + "']",
            "ApplicationMgr.ProgressInterval=0", "TrackTuple.Enable=false"]
    run_job(opts, base, plugins)  # warm-up
    reps = 5
    timing = {}
    wall = onnx = 0.0
    n_tracks = 0
    for _ in range(reps):
        app, summary, w, o = run_job(opts, base, plugins)
        wall += w
        onnx += o
        for k, v in summary["timing"].items():
            timing[k] = timing.get(k, 0.0) + v["total_s"]
        n_tracks += int(app.algorithms[[a.name for a in app.algorithms].index("TrackAcceptance")].counters["candidates"].entries) \
            if "candidates" in app.algorithms[[a.name for a in app.algorithms].index("TrackAcceptance")].counters else 0
    n = 10 * reps
    total = sum(timing.values())
    summary = {"timing": {k: {"total_s": v, "share": v / total} for k, v in timing.items()}}
    table(f"real LHCb HepMC (DSt_Pi, 10 crossings × {reps})", app, summary, wall, onnx, n,
          per=("cand.", n_tracks) if n_tracks else None)
    reco = sum(v for k, v in timing.items() if k != "Generation")
    print(f"MC-particle selection is inside the reader ('Generation', includes HepMC text parsing by pyhepmc); "
          f"tracking chain after the reader: {1e3 * reco / n:.3f} ms/event (goal ≤ 1.6 ms/event incl. selection)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--only", choices=["flagship", "hepmc"])
    args = p.parse_args(argv)
    plugins = Plugins()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "hepmc"):
            hepmc(plugins, tmp)
        if args.only in (None, "flagship"):
            flagship(args.events, plugins, tmp)


if __name__ == "__main__":
    main()
