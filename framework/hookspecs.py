"""Hook specifications of flashsim (pluggy project name ``flashsim``).

Implementations may accept any subset of a hook's parameters.  Built-in components are registered
through these same hooks (the ``algorithms.plugin`` module, found through the ``flashsim``
entry-point group like any third-party plugin).  No hook is ever called per event; the
per-algorithm wrapper hook is only called when some plugin implements it.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("flashsim")
hookimpl = pluggy.HookimplMarker("flashsim")


@hookspec
def flashsim_register_components(registry):
    """Register algorithm classes.  Called once when the plugin manager is built.

    :param registry: a :class:`framework.registry.ComponentRegistry`; call
        ``registry.add_algorithm(cls)`` for each :class:`framework.Algorithm` subclass.

    Example::

        @hookimpl
        def flashsim_register_components(registry):
            registry.add_algorithm(MyAlgorithm)
    """


@hookspec
def flashsim_register_conditions(conditions):
    """Register conditions presets.  Called once when the plugin manager is built.

    :param conditions: a :class:`framework.conditions.ConditionsRegistry`; call
        ``conditions.add(tag, values, description=..., extrapolation=False)``.

    Example::

        @hookimpl
        def flashsim_register_conditions(conditions):
            conditions.add("MyRun-13TeV", {"sqrt_s_GeV": 13000.0}, description="my preset")
    """


@hookspec
def flashsim_add_cli_options(parser):
    """Add command-line options to ``flashsim run``.  Called once while the parser is built.

    :param parser: the ``argparse.ArgumentParser`` of ``flashsim run``; values arrive in
        ``app.cli_args`` (an ``argparse.Namespace``) for :func:`flashsim_job_start`.

    Example::

        @hookimpl
        def flashsim_add_cli_options(parser):
            parser.add_argument("--my-flag", action="store_true", help="...")
    """


@hookspec
def flashsim_job_start(app):
    """Called once after every algorithm is initialized, before the first batch.

    :param app: the :class:`framework.appmgr.ApplicationMgr` (properties, algorithms, services).

    Example::

        @hookimpl
        def flashsim_job_start(app):
            app.msg_svc.report("MyPlugin", "INFO", f"{len(app.algorithms)} algorithms")
    """


@hookspec
def flashsim_job_end(app, summary):
    """Called once after finalize, before the output file is closed.

    :param app: the application manager.
    :param summary: dict with ``events_processed``, ``events_failed``, ``wall_seconds``, ``timing``
        (per algorithm) and ``counters``.

    Example::

        @hookimpl
        def flashsim_job_end(app, summary):
            print("processed", summary["events_processed"])
    """


@hookspec
def flashsim_batch_start(app, ctx):
    """Called at the start of every batch (never per event).

    :param app: the application manager.
    :param ctx: the :class:`framework.context.BatchContext` (``event_numbers``, ``run_number``).

    Example::

        @hookimpl
        def flashsim_batch_start(app, ctx):
            app.msg_svc.report("MyPlugin", "DEBUG", f"batch of {ctx.n_events} events")
    """


@hookspec
def flashsim_batch_end(app, ctx, store):
    """Called at the end of every batch, with the filled event store (read it, don't modify it).

    :param app: the application manager.
    :param ctx: the batch context (only events that passed every filter remain).
    :param store: the :class:`framework.store.EventStore` of the batch.

    Example::

        @hookimpl
        def flashsim_batch_end(app, ctx, store):
            tracks = store.get_if_exists("/Event/Rec/Tracks")
    """


@hookspec(firstresult=True)
def flashsim_execute_algorithm(algorithm, ctx, inputs):
    """Run one algorithm on one batch; wrap it (``wrapper=True``) to audit or time algorithms.

    The framework calls this hook only when a plugin other than the framework implements it;
    otherwise it calls ``algorithm.execute`` directly (a hook call costs ~2 µs per batch).

    :param algorithm: the :class:`framework.Algorithm` instance.
    :param ctx: the batch context.
    :param inputs: dict of input collections, keyed by handle name.
    :return: what ``algorithm.execute`` returns.

    Example (an auditor)::

        @hookimpl(wrapper=True)
        def flashsim_execute_algorithm(algorithm, ctx, inputs):
            t0 = time.perf_counter()
            result = yield
            print(algorithm.name, time.perf_counter() - t0)
            return result
    """


@hookspec
def flashsim_tuple_columns(tuple_name, candidates, ctx):
    """Add columns to an ntuple written by an analysis tuple algorithm (TupleTool-like).

    Called once per batch per tuple, only when some plugin implements it.

    :param tuple_name: the TTree name (e.g. ``DecayTree``).
    :param candidates: the candidate collection the tuple is built from (columnar).
    :param ctx: the batch context.
    :return: a dict ``{branch_name: np.ndarray}`` with one entry per candidate row, or None.

    Example::

        @hookimpl
        def flashsim_tuple_columns(tuple_name, candidates, ctx):
            if tuple_name == "DecayTree":
                return {"B_PT_GeV": candidates["B_PT"] / 1000.0}
    """
