"""Pythia8Generator throughput: events/s and the share of wall time spent outside Pythia.

    python benchmarks/bench_pythia8.py [--events 300] [--batch 100] [--mean-collisions 1.1]
                                       [--commands "SoftQCD:nonDiffractive = on" ...]

Runs the algorithm inside the framework (one process, one core) after a warm-up batch, then
reports:
* events/s and collisions/s of the whole algorithm;
* time inside ``pythia.nextBatch`` (generation + pythia8mc's own awkward-array construction) and
  the share of wall time outside it (seeding draws, columnar read, truth selection, assembly);
* for reference, the time of plain ``pythia.next()`` on the same seeds, so that the cost of
  nextBatch's awkward construction can be read off (nextBatch - next).
"""
from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from framework import hookimpl  # noqa: E402
from algorithms.generators.pythia8 import Pythia8Generator  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--mean-collisions", type=float, default=None, help="default: Conditions (1.1 in 2016)")
    ap.add_argument("--commands", nargs="*", default=["SoftQCD:nonDiffractive = on"])
    ap.add_argument("--conditions", default="2016-MagUp-13TeV")
    args = ap.parse_args(argv)

    from framework.appmgr import ApplicationMgr
    from framework.options import AlgSpec, JobOptions, Where
    from framework.registry import Plugins

    plugin = types.ModuleType("bench_pythia8_plugin")

    @hookimpl
    def flashsim_register_components(registry):
        registry.add_algorithm(Pythia8Generator)

    plugin.flashsim_register_components = flashsim_register_components
    props = {"Commands": args.commands}
    if args.mean_collisions is not None:
        props["MeanCollisions"] = args.mean_collisions
    opts = JobOptions(app={"Output": "", "OutputLevel": "WARNING", "EvtMax": args.events + args.batch,
                           "Conditions": args.conditions},
                      algorithms=[AlgSpec("Pythia8Generator", "Generation", Where("bench"), props)])
    app = ApplicationMgr(opts, plugins=Plugins(extra_plugins=[plugin], autoload=False))
    t0 = time.perf_counter()
    app.initialize()
    t_init = time.perf_counter() - t0
    alg = app.algorithms[0]
    app.run_batch(np.arange(args.batch, dtype=np.int64))  # warm-up (imports, caches)
    alg.pythia_seconds = alg.total_seconds = 0.0
    n_coll = n_part = 0
    t0 = time.perf_counter()
    for first in range(args.batch, args.batch + args.events, args.batch):
        numbers = np.arange(first, min(first + args.batch, args.batch + args.events), dtype=np.int64)
        store = app.run_batch(numbers)
        n_coll += int(store.get("/Event/Gen/Header")["n_collisions"].sum())
        n_part += len(store.get("/Event/MC/Particles"))
    wall = time.perf_counter() - t0

    # plain next() on the same seeds, for reference
    from framework.context import BatchContext

    ctx = BatchContext(np.arange(args.batch, args.batch + args.events), app.RunNumber, app.Seed).for_algorithm(alg.name)
    seeds, ncoll, _ = alg.draw_event_setup(ctx)
    py = alg._pythia
    t1 = time.perf_counter()
    for s, k in zip(seeds, ncoll):
        py.rndm.init(int(s))
        for _ in range(int(k)):
            py.next()
    t_next = time.perf_counter() - t1

    print(f"Pythia8Generator {args.commands} at {alg._sqrt_s} GeV, mean collisions {alg._mu}, "
          f"batch {args.batch}, init {t_init:.1f} s")
    print(f"events: {args.events}, collisions: {n_coll} ({n_coll / args.events:.2f}/event), "
          f"MC particles: {n_part / args.events:.0f}/event")
    print(f"throughput: {args.events / wall:.1f} events/s, {n_coll / wall:.1f} collisions/s "
          f"({1e3 * wall / args.events:.2f} ms/event)")
    print(f"inside pythia.nextBatch: {alg.pythia_seconds:.2f} s; outside: {wall - alg.pythia_seconds:.2f} s "
          f"= {100 * (wall - alg.pythia_seconds) / wall:.1f} % of wall time")
    print(f"reference plain next() on the same seeds: {t_next:.2f} s "
          f"(nextBatch awkward construction ~ {alg.pythia_seconds - t_next:+.2f} s); "
          f"share of wall time not generating events: {100 * (wall - t_next) / wall:.1f} %")


if __name__ == "__main__":
    main()
