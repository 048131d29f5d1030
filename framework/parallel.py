"""Multi-process production: contiguous event shards, one worker process each, outputs merged.

Because every random number is keyed by (seed, run, algorithm, event, object), a shard computes
exactly the events a single job would; the merged file is identical (branch by branch) to the
single-process output.  Shards are processed with ``concurrent.futures.ProcessPoolExecutor``; each
writes its own temporary file, merged in event order into the requested output, atomically.
"""
from __future__ import annotations

import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .counters import counter_from_dict
from .errors import FlashsimError


def shard_ranges(first: int, n_events: int, n_shards: int) -> list[tuple[int, int]]:
    n_shards = max(1, min(n_shards, n_events)) if n_events > 0 else 1
    edges = np.linspace(0, n_events, n_shards + 1).round().astype(int)
    return [(first + int(a), int(b - a)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _run_shard(args):
    option_files, overrides, first, n, output, extra_plugins = args
    from .options import load_options
    from .appmgr import ApplicationMgr
    from .registry import Plugins
    import io

    overrides = list(overrides) + [f"ApplicationMgr.FirstEvent={first}", f"ApplicationMgr.EvtMax={n}",
                                   f"ApplicationMgr.Output={output}", "ApplicationMgr.Processes=1",
                                   "ApplicationMgr.ProgressInterval=0"]
    log = io.StringIO()
    try:
        app = ApplicationMgr(load_options(option_files), overrides, Plugins(extra_plugins), stream=log)
        summary = app.run()
    except FlashsimError as exc:
        return {"error": str(exc), "log": log.getvalue()}
    return {"summary": summary, "log": log.getvalue(), "output": output}


def run_parallel(app, option_files, overrides, extra_plugins=()) -> dict:
    """Run ``app``'s job in ``app.Processes`` shards and merge; returns a summary."""
    app.initialize()  # validates everything once and resolves the event count
    for alg in app.algorithms:
        if alg.Enable:
            alg.finalize()
    n_total = app.events_requested
    shards = shard_ranges(app.FirstEvent, n_total, app.Processes)
    tmpdir = tempfile.mkdtemp(prefix="flashsim-shards-", dir=str(Path(app.Output).resolve().parent) if app.Output else None)
    jobs = []
    for i, (first, n) in enumerate(shards):
        out = os.path.join(tmpdir, f"shard{i:04d}.root") if app.Output else ""
        jobs.append((list(option_files), list(overrides), first, n, out, list(extra_plugins)))
    app.report("INFO", f"{n_total} events in {len(shards)} shards on {app.Processes} processes")
    # 'spawn': workers start clean (no inherited ONNX Runtime thread pools or numba state)
    with ProcessPoolExecutor(max_workers=app.Processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_run_shard, jobs))
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        for r in results:
            if os.path.exists(r.get("output", "") or ""):
                os.remove(r["output"])
        raise FlashsimError("shard failed: " + errors[0])
    counters: dict = {}
    for r in results:
        for alg, cs in r["summary"]["counters"].items():
            for name, d in cs.items():
                c = counter_from_dict(name, d)
                mine = counters.setdefault(alg, {})
                if name in mine:
                    mine[name].merge(c)
                else:
                    mine[name] = c
    counters_d = {a: {k: c.to_dict() for k, c in cs.items()} for a, cs in counters.items()}
    summary = {"events_requested": n_total,
               "events_processed": sum(r["summary"]["events_processed"] for r in results),
               "events_failed": sum(r["summary"]["events_failed"] for r in results),
               "wall_seconds": max(r["summary"]["wall_seconds"] for r in results),
               "timing": {}, "counters": counters_d, "shards": [{"first": f, "n": n} for f, n in shards]}
    for r in results:
        for name, t in r["summary"]["timing"].items():
            agg = summary["timing"].setdefault(name, {"total_s": 0.0, "cpu_s": 0.0})
            agg["total_s"] += t["total_s"]
            agg["cpu_s"] += t.get("cpu_s", 0.0)
    total = sum(t["total_s"] for t in summary["timing"].values()) or 1e-12
    for t in summary["timing"].values():
        t["us_per_event"] = 1e6 * t["total_s"] / max(n_total, 1)
        t["share"] = t["total_s"] / total
        t["cpu_us_per_event"] = 1e6 * t["cpu_s"] / max(n_total, 1)
    if app.Output:
        merge_outputs([r["output"] for r in results], app.Output, app.Compression, app, summary)
        for r in results:
            os.remove(r["output"])
    os.rmdir(tmpdir)
    return summary


def merge_outputs(inputs, output, compression, app, summary):
    """Concatenate the TTrees of shard files in order into ``output`` (atomic)."""
    import uproot

    from .output import OutputSvc

    svc = OutputSvc(output, compression)
    trees: list[str] = []
    for path in inputs:
        with uproot.open(path) as f:
            for key, cls in f.classnames().items():
                name = key.split(";")[0]
                if cls == "TTree" and name not in trees:
                    trees.append(name)
    for tree in trees:
        handle = svc.ntuple(tree, requester="merge")
        for path in inputs:
            with uproot.open(path) as f:
                if tree in f:
                    handle.extend(f[tree].arrays(library="np"))
                    handle.commit()
    provenance = app.provenance()
    provenance["events_processed"] = summary["events_processed"]
    provenance["events_failed"] = summary["events_failed"]
    provenance["shards"] = summary["shards"]
    provenance["counters_merged_from_shards"] = True
    svc.close(True, provenance, summary["counters"])
