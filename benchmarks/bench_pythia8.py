"""Pythia 8 generators: events/s and the share of wall time spent outside Pythia.

    python benchmarks/bench_pythia8.py minbias   [--events 300] [--batch 100]
    python benchmarks/bench_pythia8.py Bu2JpsiK  [--events 20]  [--batch 10]
    python benchmarks/bench_pythia8.py Lb2Lcmunu [--events 20]  [--batch 10]
        [--mean-collisions MU] [--commands "SoftQCD:nonDiffractive = on" ...] [--cut DaughtersInLHCb]

Runs the algorithm inside the framework (one process, one core) after a warm-up batch, then
reports events/s and the time inside Pythia (``next``, ``forceHadronLevel``, ``nextBatch`` incl.
its awkward-array construction, event-record copies) versus everything else (per-event seeding
draws, Python orchestration of the signal trials, decay-handler callbacks, phase-space decays,
columnar read, truth conversion).  For the signal modes it also prints the parton-level events and
hadronisations per signal event and the generator-level cut efficiency.
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
from algorithms.generators.pythia8_signal import Pythia8SignalGenerator  # noqa: E402

MODES = {
    "minbias": dict(type="Pythia8Generator", props={}),
    "Bu2JpsiK": dict(type="Pythia8SignalGenerator",
                     props={"Descriptor": "[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc", "GeneratorCut": "DaughtersInLHCb"}),
    "Lb2Lcmunu": dict(type="Pythia8SignalGenerator",
                      props={"Descriptor": "[Lambda_b0 -> (Lambda_c+ -> p+ K- pi+) mu- anti-nu_mu]cc",
                             "GeneratorCut": "ChargedDaughtersInEta", "CutEtaRange": [2.0, 5.0]}),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="minbias", choices=list(MODES))
    ap.add_argument("--events", type=int, default=None, help="default: 300 (minbias), 20 (signal)")
    ap.add_argument("--batch", type=int, default=None, help="default: 100 (minbias), 10 (signal)")
    ap.add_argument("--mean-collisions", type=float, default=None, help="default: Conditions (1.1 in 2016)")
    ap.add_argument("--commands", nargs="*", default=["SoftQCD:nonDiffractive = on"])
    ap.add_argument("--cut", default=None, help="signal: GeneratorCut (default per mode)")
    ap.add_argument("--conditions", default="2016-MagUp-13TeV")
    args = ap.parse_args(argv)
    signal = args.mode != "minbias"
    n_events = args.events or (20 if signal else 300)
    batch = args.batch or (10 if signal else 100)

    from framework.appmgr import ApplicationMgr
    from framework.options import AlgSpec, JobOptions, Where
    from framework.registry import Plugins

    plugin = types.ModuleType("bench_pythia8_plugin")

    @hookimpl
    def flashsim_register_components(registry):
        registry.add_algorithm(Pythia8Generator)
        registry.add_algorithm(Pythia8SignalGenerator)

    plugin.flashsim_register_components = flashsim_register_components
    mode = MODES[args.mode]
    props = dict(mode["props"], Commands=args.commands)
    if args.cut:
        props["GeneratorCut"] = args.cut
    if args.mean_collisions is not None:
        props["MeanCollisions"] = args.mean_collisions
    opts = JobOptions(app={"Output": "", "OutputLevel": "WARNING", "EvtMax": n_events + batch,
                           "Conditions": args.conditions},
                      algorithms=[AlgSpec(mode["type"], "Generation", Where("bench"), props)])
    app = ApplicationMgr(opts, plugins=Plugins(extra_plugins=[plugin], autoload=False))
    t0 = time.perf_counter()
    app.initialize()
    t_init = time.perf_counter() - t0
    alg = app.algorithms[0]
    app.run_batch(np.arange(min(batch, 2 if signal else batch), dtype=np.int64))  # warm-up (imports, numba)
    alg.pythia_seconds = alg.total_seconds = 0.0
    for c in alg.counters.values():  # keep only the measured events in the counters
        c.__init__(c.name)
    n_coll = n_part = 0
    t0 = time.perf_counter()
    for first in range(batch, batch + n_events, batch):
        numbers = np.arange(first, min(first + batch, batch + n_events), dtype=np.int64)
        store = app.run_batch(numbers)
        n_coll += int(store.get("/Event/Gen/Header")["n_collisions"].sum())
        n_part += len(store.get("/Event/MC/Particles"))
    wall = time.perf_counter() - t0

    print(f"{type(alg).__name__} [{args.mode}] {args.commands} at {alg._sqrt_s} GeV, mean collisions {alg._mu}, "
          f"batch {batch}, init {t_init:.1f} s")
    print(f"events: {n_events}, collisions: {n_coll} ({n_coll / n_events:.2f}/event), "
          f"MC particles: {n_part / n_events:.0f}/event")
    print(f"throughput: {n_events / wall:.2f} events/s, {n_coll / wall:.1f} collisions/s "
          f"({1e3 * wall / n_events:.1f} ms/event)")
    print(f"inside Pythia: {alg.pythia_seconds:.2f} s; outside: {wall - alg.pythia_seconds:.2f} s "
          f"= {100 * (wall - alg.pythia_seconds) / wall:.1f} % of wall time")
    if signal:
        cs = alg.counters

        def row(name):
            return cs[name].to_dict() if name in cs else {}

        for name in ("parton-level events per signal event", "hadronisations per signal event"):
            d = row(name)
            print(f"{name}: mean {d.get('mean', float('nan')):.1f}")
        for name in [k for k in cs if k.startswith("parton-level events with")] + [
                "generator-level cut (interactions)", "generator-level cut (candidates)"]:
            c = cs[name]
            print(f"{name}: {100 * c.efficiency:.2f} +- {100 * c.error:.2f} %  ({c.to_dict()})")


if __name__ == "__main__":
    main()
