"""The application manager: configuration, data-flow check, batched event loop, summary.

Per batch: the store is cleared, the batch context is made from the global event numbers, and
every enabled algorithm runs once in sequence.  An exception inside ``execute`` is isolated to its
event(s) by re-running that algorithm event by event (randomness is keyed by event number, so the
good events get identical results); failing events are reported with algorithm and event number,
dropped from the batch and counted; the job stops once an algorithm exceeds its ``ErrorMax``.
The behaviour is the same at every batch size.
"""
from __future__ import annotations

import copy
import json
import platform
import sys
import time
import traceback
from datetime import datetime, timezone

import numpy as np

from . import __version__
from .algorithm import Algorithm
from .collection import Collection
from .component import Component, Property
from .context import BatchContext
from .counters import format_counter_table
from .errors import ConfigurationError, EventError, did_you_mean
from .messages import LEVELS, MessageSvc
from .models import ModelSvc
from .options import JobOptions, parse_set
from .output import OutputSvc
from .registry import Plugins
from .store import EventStore


class ApplicationMgr(Component):
    """Job-level settings (the ``ApplicationMgr`` section of the options)."""

    EvtMax = Property(int, -1, "number of events to process (-1: all events the input provides)")
    FirstEvent = Property(int, 0, "global number of the first event (a shard's start)")
    BatchSize = Property(int, 1000, "events per batch: every algorithm executes once per batch")
    Seed = Property(int, 1, "job seed of the counter-based random streams")
    RunNumber = Property(int, 1, "run number (part of every random-stream key, written to ntuples)")
    Output = Property(str, "", "output ROOT file (written atomically at the end of a successful job)")
    Compression = Property(str, "ZSTD:1", "output compression ALGO:LEVEL (ZSTD, LZ4, ZLIB, LZMA, NONE)")
    Conditions = Property(str, "2016-MagUp-13TeV", "conditions tag: consistent defaults for √s, beam spot, models")
    AllowConditionsMismatch = Property(bool, False, "accept models trained for another conditions tag")
    OutputLevel = Property(str, "INFO", "global message threshold", choices=list(LEVELS))
    OnnxThreads = Property(int, 1, "ONNX Runtime intra-op threads per session")
    OnnxProvider = Property(str, "cpu", "ONNX Runtime provider: cpu, cuda or auto", choices=["cpu", "cuda", "auto"])
    OnnxChunkSize = Property(int, 4096, "rows per ONNX Runtime call, a multiple of 16 (padded shapes: results independent of batching)")
    ProgressInterval = Property(float, 10.0, "seconds between progress lines when not on a terminal (0: none)")
    Processes = Property(int, 1, "worker processes; events are split in contiguous shards and outputs merged")

    def __init__(self, options: JobOptions, overrides=(), plugins: Plugins | None = None, cli_args=None,
                 stream=None):
        super().__init__("ApplicationMgr")
        self.options = options
        self.plugins = plugins or Plugins()
        self.cli_args = cli_args
        self.stream = stream
        self.algorithms: list[Algorithm] = []
        self.msg_svc = MessageSvc("INFO", stream=stream)
        self.model_svc = None
        self.output_svc = None
        self.conditions = None
        self._services = {}
        self.timing: dict[str, float] = {}  # wall clock per algorithm
        self.cpu_timing: dict[str, float] = {}  # CPU time of the event-loop thread per algorithm
        self.events_processed = 0
        self.events_failed = 0
        self.events_requested = 0
        self.state = "OFFLINE"
        self._configure(overrides)

    # -- configuration ---------------------------------------------------------------------------
    def _configure(self, overrides):
        opts = self.options
        for key, value in opts.app.items():
            where = opts.app_sources.get(key, "?")
            try:
                self.set_property(key, value)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{where}: ApplicationMgr: {exc}") from None
        for spec in opts.algorithms:
            cls = self.plugins.components.get(spec.type, where=f"{spec.where}: algorithm '{spec.name}': ")
            alg = cls(spec.name)
            for key, value in spec.properties.items():
                try:
                    alg.set_property(key, value)
                except ConfigurationError as exc:
                    raise ConfigurationError(f"{spec.sources.get(key, spec.where)}: {exc}") from None
            self.algorithms.append(alg)
        names = [a.name for a in self.algorithms]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigurationError(f"algorithm names must be unique: {sorted(dupes)}")
        for item in overrides:
            name, prop, text = parse_set(item)
            if name == "ApplicationMgr":
                target = self
            else:
                target = next((a for a in self.algorithms if a.name == name), None)
                if target is None:
                    raise ConfigurationError(
                        f"--set {item}: no algorithm named '{name}'{did_you_mean(name, names + ['ApplicationMgr'])}; "
                        f"configured: {', '.join(names)}")
            try:
                target.set_property_from_string(prop, text)
            except ConfigurationError as exc:
                raise ConfigurationError(f"--set {item}: {exc}") from None
        if self.BatchSize < 1:
            raise ConfigurationError(f"ApplicationMgr.BatchSize must be >= 1, got {self.BatchSize}")
        self.msg_svc.level = LEVELS[self.OutputLevel]
        self.state = "CONFIGURED"

    def effective_configuration(self) -> dict:
        return {"ApplicationMgr": self.properties(),
                "Algorithms": [{"type": type(a).__name__, "name": a.name, **a.properties()} for a in self.algorithms]}

    def service(self, name: str):
        table = {"MessageSvc": self.msg_svc, "ModelSvc": self.model_svc, "OutputSvc": self.output_svc, **self._services}
        if name not in table:
            raise ConfigurationError(f"unknown service '{name}'{did_you_mean(name, table)}")
        return table[name]

    # -- data flow ---------------------------------------------------------------------------------
    def dataflow(self):
        """[(algorithm, {input name: path}, {output name: path})] for enabled algorithms, in order."""
        rows = []
        for alg in self.algorithms:
            if not alg.Enable:
                continue
            ins = {k: getattr(alg, k) for k in alg.handles("input")}
            for k in alg.handles("inputlist"):
                ins.update({f"{k}[{i}]": p for i, p in enumerate(getattr(alg, k))})
            outs = {k: getattr(alg, k) for k in alg.handles("output")}
            rows.append((alg, ins, outs))
        return rows

    def check_dataflow(self):
        produced: dict[str, str] = {}
        problems = []
        for alg, ins, outs in self.dataflow():
            optional = {k for k, h in alg.handles("input").items() if h.optional}
            for handle, path in ins.items():
                if path not in produced and handle not in optional:
                    later = [a.name for a, _, o in self.dataflow() if path in o.values()]
                    hint = f" (produced later by {later[0]}: reorder the sequence)" if later else did_you_mean(path, produced)
                    problems.append(f"{alg.name}.{handle} reads {path}, which no earlier algorithm produces{hint}")
            for handle, path in outs.items():
                if path in produced:
                    problems.append(f"{alg.name}.{handle} writes {path}, already written by {produced[path]}")
                produced[path] = alg.name
        if problems:
            raise ConfigurationError("data-flow check failed: " + "; ".join(problems))

    def dataflow_text(self) -> str:
        lines = ["Data Dependencies for Algorithms:"]
        for alg, ins, outs in self.dataflow():
            lines.append(f"  {alg.name} ({type(alg).__name__})")
            lines += [f"    INPUT  {p}   [{h}]" for h, p in ins.items()]
            lines += [f"    OUTPUT {p}   [{h}]" for h, p in outs.items()]
        try:
            self.check_dataflow()
            lines.append("No unmet INPUT data dependencies were found")
        except ConfigurationError as exc:
            lines.append(str(exc))
        return "\n".join(lines)

    def dataflow_dot(self) -> str:
        lines = ["digraph flashsim {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
        for alg, ins, outs in self.dataflow():
            lines.append(f'  "{alg.name}" [shape=box, label="{alg.name}\\n({type(alg).__name__})"];')
            for p in ins.values():
                lines.append(f'  "{p}" [shape=ellipse]; "{p}" -> "{alg.name}";')
            for p in outs.values():
                lines.append(f'  "{p}" [shape=ellipse]; "{alg.name}" -> "{p}";')
        lines.append("}")
        return "\n".join(lines)

    # -- lifecycle -------------------------------------------------------------------------------
    def initialize(self):
        self.conditions = self.plugins.conditions.get(self.Conditions)
        meta = self.plugins.conditions.meta(self.Conditions)
        self.model_svc = ModelSvc(self.OnnxThreads, self.OnnxProvider, self.OnnxChunkSize, self.Conditions,
                                  self.AllowConditionsMismatch)
        self.output_svc = OutputSvc(self.Output or None, self.Compression)
        self.check_dataflow()
        self.report("INFO", f"flashsim {__version__}: {len(self.algorithms)} algorithms, conditions '{self.Conditions}'"
                    + (" (an EXTRAPOLATION: not validated against LHCb)" if meta.get("extrapolation") else ""))
        for alg in self.algorithms:
            alg._app = self
            if not alg.Enable:
                continue
            try:
                alg.initialize()
            except ConfigurationError as exc:
                raise ConfigurationError(f"{alg.name} ({type(alg).__name__}) initialize: {exc}") from None
            self.timing[alg.name] = 0.0
            self.cpu_timing[alg.name] = 0.0
        self.events_requested = self._resolve_event_count()
        self._wrapper_hook = self.plugins.has_external_impls("flashsim_execute_algorithm")
        self._batch_hooks = (self.plugins.has_external_impls("flashsim_batch_start"),
                             self.plugins.has_external_impls("flashsim_batch_end"))
        self.state = "INITIALIZED"
        self.plugins.pm.hook.flashsim_job_start(app=self)

    def _resolve_event_count(self) -> int:
        available = [a.available_events() for a in self.algorithms if a.Enable]
        available = [n for n in available if n is not None]
        limit = min(available) - self.FirstEvent if available else None
        if self.EvtMax < 0:
            if limit is None:
                raise ConfigurationError("ApplicationMgr.EvtMax is -1 (all events) but no input is finite: set EvtMax or -n")
            return max(limit, 0)
        if limit is not None and self.EvtMax > limit:
            self.report("WARNING", f"EvtMax={self.EvtMax} but the input provides {limit} events from event "
                                   f"{self.FirstEvent}: processing {limit}")
            return max(limit, 0)
        return self.EvtMax

    def report(self, level, text):
        self.msg_svc.report("ApplicationMgr", level, text)

    # -- execution ---------------------------------------------------------------------------------
    def _call(self, alg, ctx, inputs):
        """Execute ``alg``; on an exception its counters are restored, so failed attempts count nothing."""
        snapshot = {k: copy.copy(c) for k, c in alg._counters.items()}
        try:
            return self._call_unguarded(alg, ctx, inputs)
        except BaseException:
            alg._counters = snapshot
            raise

    def _call_unguarded(self, alg, ctx, inputs):
        ctx.for_algorithm(alg.name)
        if self._wrapper_hook:
            return self.plugins.pm.hook.flashsim_execute_algorithm(algorithm=alg, ctx=ctx, inputs=inputs)
        return alg.execute(ctx, **inputs)

    def _handles_of(self, alg):
        return [h for h in self.output_svc.handles.values() if h.requester == alg.name]

    def _normalise(self, alg, ctx, result):
        if alg.is_filter:
            mask = np.asarray(result, dtype=bool)
            if mask.shape != (ctx.n_events,):
                raise ValueError(f"filter {alg.name} returned {mask.shape}, expected ({ctx.n_events},)")
            return mask
        outs = list(alg.handles("output"))
        if not outs:
            return {}
        if isinstance(result, Collection) and len(outs) == 1:
            result = {outs[0]: result}
        if not isinstance(result, dict) or set(result) != set(outs):
            got = sorted(result) if isinstance(result, dict) else type(result).__name__
            raise TypeError(f"{alg.name}.execute must return {outs[0] if len(outs) == 1 else outs}, got {got}")
        for key, coll in result.items():
            if isinstance(coll, Collection) and coll.n_events != ctx.n_events:
                raise ValueError(f"{alg.name}: output {key} has {coll.n_events} events, the batch has {ctx.n_events}")
        return result

    def _execute(self, alg, ctx, store):
        """Run ``alg`` on the batch; returns (normalised result, failed local event indices)."""
        in_paths = self._input_paths(alg)
        inputs = self._fetch(store, in_paths)
        try:
            result = self._normalise(alg, ctx, self._call(alg, ctx, inputs))
            for h in self._handles_of(alg):  # looked up after the call: handles may be created lazily
                h.commit()
            return result, []
        except (KeyboardInterrupt, EventError, ConfigurationError):
            raise
        except Exception as exc:
            for h in self._handles_of(alg):
                h.discard()
            if ctx.n_events == 1:
                self._report_failure(alg, ctx, exc)
                return None, [0]
        # isolate the failing event(s): re-run event by event
        good_results, failed = [], []
        for i in range(ctx.n_events):
            sub_ctx = ctx.subset([i])
            sub_store = store.view_events([i])
            sub_inputs = self._fetch(sub_store, in_paths)
            try:
                res = self._normalise(alg, sub_ctx, self._call(alg, sub_ctx, sub_inputs))
                for h in self._handles_of(alg):
                    h.commit()
                good_results.append(res)
            except (KeyboardInterrupt, EventError, ConfigurationError):
                raise
            except Exception as exc:
                for h in self._handles_of(alg):
                    h.discard()
                self._report_failure(alg, sub_ctx, exc)
                failed.append(i)
        if alg.is_filter:
            combined = np.concatenate(good_results) if good_results else np.zeros(0, bool)
        elif not good_results:
            combined = None
        else:
            combined = {k: Collection.concat([r[k] for r in good_results]) for k in good_results[0]}
        return combined, failed

    @staticmethod
    def _input_paths(alg):
        """{handle: path, list of paths (InputList) or (path, optional)}."""
        paths = {k: (getattr(alg, k), h.optional) for k, h in alg.handles("input").items()}
        paths.update({k: getattr(alg, k) for k in alg.handles("inputlist")})
        return paths

    @staticmethod
    def _fetch(store, in_paths):
        inputs = {}
        for k, spec in in_paths.items():
            if isinstance(spec, list):
                inputs[k] = [store.get(p) for p in spec]
            else:
                path, optional = spec
                inputs[k] = store.get_if_exists(path) if optional else store.get(path)
        return inputs

    def _report_failure(self, alg, ctx, exc):
        alg.n_failed_events += ctx.n_events
        self.events_failed += ctx.n_events
        self.msg_svc.report(alg.name, "ERROR",
                            f"{type(exc).__name__} in event {int(ctx.event_numbers[0])} (run {ctx.run_number}): {exc}; "
                            f"event skipped ({alg.n_failed_events}/{alg.ErrorMax} allowed)")
        self.msg_svc.report(alg.name, "DEBUG", traceback.format_exc())
        if alg.n_failed_events > alg.ErrorMax:
            raise EventError(f"{alg.name}: {alg.n_failed_events} failed events exceed ErrorMax={alg.ErrorMax}; "
                             f"last: {type(exc).__name__}: {exc}")

    def run_batch(self, event_numbers, batch_index=0, store=None) -> EventStore:
        store = store if store is not None else EventStore()
        store.clear()
        ctx = BatchContext(event_numbers, self.RunNumber, self.Seed, batch_index)
        if self._batch_hooks[0]:
            self.plugins.pm.hook.flashsim_batch_start(app=self, ctx=ctx)
        for alg in self.algorithms:
            if not alg.Enable or ctx.n_events == 0:
                continue
            t0, c0 = time.perf_counter(), time.thread_time()
            result, failed = self._execute(alg, ctx, store)
            if failed:
                keep = np.ones(ctx.n_events, bool)
                keep[failed] = False
                store.select_events(keep)
                ctx = ctx.subset(np.flatnonzero(keep))
            if alg.is_filter:
                if result is not None and len(result):
                    alg.binomial_counter("passed").add(result)
                    store.select_events(result)
                    ctx = ctx.subset(np.flatnonzero(result))
            elif result:
                for key, obj in result.items():
                    if isinstance(obj, Collection):
                        obj.bind(ctx.event_numbers)
                    store.put(getattr(alg, key), obj)
            self.timing[alg.name] += time.perf_counter() - t0
            self.cpu_timing[alg.name] += time.thread_time() - c0
        self.events_processed += ctx.n_events
        if self._batch_hooks[1]:
            self.plugins.pm.hook.flashsim_batch_end(app=self, ctx=ctx, store=store)
        self.last_ctx = ctx
        return store

    def run(self) -> dict:
        """Initialize, loop over all batches, finalize; returns the job summary."""
        if self.state == "CONFIGURED":
            self.initialize()
        start = self.FirstEvent
        stop = start + self.events_requested
        progress = _Progress(self, self.events_requested)
        t_start = time.perf_counter()
        success = False
        store = EventStore()
        try:
            for batch_index, first in enumerate(range(start, stop, self.BatchSize)):
                numbers = np.arange(first, min(first + self.BatchSize, stop), dtype=np.int64)
                self.run_batch(numbers, batch_index, store)
                progress.update(int(numbers[-1] - start + 1))
            store.clear()
            for alg in self.algorithms:
                if alg.Enable:
                    alg.finalize()
            success = True
        finally:
            progress.close()
            self.wall_seconds = time.perf_counter() - t_start
            summary = self.summary()
            if success:
                self.plugins.pm.hook.flashsim_job_end(app=self, summary=summary)
            written = self.output_svc.close(success, self.provenance(), summary["counters"]) if self.output_svc else None
            if success:
                self.print_summary(summary)
                if written:
                    self.report("INFO", f"output written to {written}")
            self.state = "FINALIZED"
        return summary

    # -- summary and provenance ----------------------------------------------------------------
    def summary(self) -> dict:
        counters = {a.name: {k: c.to_dict() for k, c in a.counters.items()} for a in self.algorithms if a.counters}
        n = max(self.events_requested, 1)
        total = sum(self.timing.values()) or 1e-12
        timing = {k: {"total_s": v, "us_per_event": 1e6 * v / n, "share": v / total,
                      "cpu_s": self.cpu_timing.get(k, 0.0), "cpu_us_per_event": 1e6 * self.cpu_timing.get(k, 0.0) / n}
                  for k, v in self.timing.items()}
        return {"events_requested": self.events_requested, "events_processed": self.events_processed,
                "events_failed": self.events_failed, "wall_seconds": getattr(self, "wall_seconds", 0.0),
                "timing": timing, "counters": counters}

    def print_summary(self, summary):
        out = []
        for alg in self.algorithms:
            table = format_counter_table(alg.name, alg.counters)
            if table:
                out.append(f"{alg.name[:18]:<18} INFO    " + table[0])
                out += table[1:]
        out.append("")
        out.append(f"{'Algorithm':<28} {'total (s)':>10} {'µs/event':>10} {'share':>7} {'CPU µs/event':>13}")
        for name, t in summary["timing"].items():
            out.append(f"{name:<28} {t['total_s']:>10.3f} {t['us_per_event']:>10.2f} {100 * t['share']:>6.1f}% "
                       f"{t.get('cpu_us_per_event', 0.0):>13.2f}")
        rate = summary["events_requested"] / summary["wall_seconds"] if summary["wall_seconds"] else 0.0
        out.append(f"Events: {summary['events_requested']} requested, {summary['events_processed']} passed, "
                   f"{summary['events_failed']} failed; wall {summary['wall_seconds']:.2f} s ({rate:.0f} events/s)")
        stream = self.stream or sys.stdout
        print("\n".join(out), file=stream)

    def provenance(self) -> dict:
        import importlib.metadata as md

        versions = {}
        for pkg in ("flashsim", "numpy", "numba", "onnxruntime", "uproot", "pluggy", "particle", "pyyaml", "pyhepmc", "pythia8mc"):
            try:
                versions[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                pass
        return {
            "flashsim_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(),
            "host": platform.node(), "python": sys.version.split()[0],
            "command": sys.argv,
            "options_files": self.options.files,
            "seed": self.Seed, "run_number": self.RunNumber,
            "first_event": self.FirstEvent, "events_requested": self.events_requested,
            "events_processed": self.events_processed, "events_failed": self.events_failed,
            "conditions": self.Conditions,
            "effective_options": self.effective_configuration(),
            "packages": versions,
            "models": self.model_svc.provenance() if self.model_svc else [],
            "plugins": [{"name": n, "distribution": d, "version": v} for n, d, v, _ in self.plugins.plugin_rows()],
        }


class _Progress:
    """A progress bar with events/s on a terminal; periodic lines otherwise."""

    def __init__(self, app, total):
        self.app = app
        self.total = total
        self.tty = (app.stream or sys.stdout).isatty()
        self.t0 = self.last = time.perf_counter()
        self.done = 0

    def update(self, done):
        self.done = done
        now = time.perf_counter()
        rate = done / max(now - self.t0, 1e-9)
        if self.tty:
            frac = done / max(self.total, 1)
            bar = "#" * int(30 * frac)
            print(f"\r[{bar:<30}] {done}/{self.total} events  {rate:,.0f} events/s", end="",
                  file=self.app.stream or sys.stdout, flush=True)
        elif self.app.ProgressInterval > 0 and now - self.last >= self.app.ProgressInterval:
            self.last = now
            self.app.report("INFO", f"{done}/{self.total} events processed ({rate:,.0f} events/s)")

    def close(self):
        if self.tty and self.done:
            print(file=self.app.stream or sys.stdout)
