"""Framework overhead: N no-op algorithms over many events at the default batch size.

Goal (issue 2): < 0.5 µs per event per algorithm at the default batch size.
Run: python benchmarks/bench_framework.py [--events 1000000] [--algorithms 10]
"""
from __future__ import annotations

import argparse
import io
import resource
import time

from framework.appmgr import ApplicationMgr
from framework.options import JobOptions, AlgSpec, Where
from framework.registry import Plugins


def run(n_events: int, n_algs: int, batch: int) -> dict:
    opts = JobOptions(app={"EvtMax": n_events, "BatchSize": batch, "ProgressInterval": 0.0},
                      algorithms=[AlgSpec("NoOp", f"NoOp{i}", Where("bench")) for i in range(n_algs)])
    app = ApplicationMgr(opts, [], Plugins(), stream=io.StringIO())
    t0 = time.perf_counter()
    app.run()
    wall = time.perf_counter() - t0
    return {"batch": batch, "events": n_events, "algorithms": n_algs, "wall_s": wall,
            "us_per_event_per_alg": 1e6 * wall / n_events / n_algs, "events_per_s": n_events / wall}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--algorithms", type=int, default=10)
    args = p.parse_args(argv)
    rows = [run(args.events, args.algorithms, b) for b in (1000, 10000)]
    rows.append(run(min(args.events, 20000), args.algorithms, 1))
    print(f"{'benchmark':<28} {'batch':>6} {'events':>9} {'events/s':>12} {'µs/event/alg':>13} {'goal':>8}")
    for r in rows:
        goal = "< 0.5" if r["batch"] == 1000 else ""
        print(f"{'framework overhead (NoOp)':<28} {r['batch']:>6} {r['events']:>9} {r['events_per_s']:>12,.0f} "
              f"{r['us_per_event_per_alg']:>13.4f} {goal:>8}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return rows


if __name__ == "__main__":
    main()
