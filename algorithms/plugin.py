"""Registers the built-in components through the same pluggy hooks third-party plugins use."""
from __future__ import annotations

import importlib

from framework import hookimpl

from .conditions import PRESETS

# (module, class names) — imported when the registry is built
BUILTIN_ALGORITHMS = [
    ("algorithms.basic", ["NoOp", "EventCounter", "PrescaleFilter"]),
    ("algorithms.generators.particle_gun", ["ParticleGun"]),
    ("algorithms.generators.hepmc", ["HepMCReader"]),
    ("algorithms.generators.pythia8", ["Pythia8Generator"]),
    ("algorithms.generators.pythia8_signal", ["Pythia8SignalGenerator"]),
    ("algorithms.tracking.pv", ["PVReconstruction"]),
    ("algorithms.tracking.acceptance", ["Acceptance"]),
    ("algorithms.tracking.efficiency", ["TrackingEfficiency"]),
    ("algorithms.tracking.resolution", ["TrackResolution"]),
    ("algorithms.tracking.covariance", ["TrackCovariance"]),
    ("algorithms.tracking.ip", ["TrackIP"]),
    ("algorithms.tracking.summary", ["RecSummary"]),
    ("algorithms.tracking.ntuple", ["TrackTupleWriter"]),
    ("algorithms.pid.teacher.algorithm", ["PIDTeacher"]),
    ("algorithms.pid.flash", ["FlashPID"]),
    ("algorithms.analysis.particles", ["MakeParticles", "MakeNoPIDParticles"]),
    ("algorithms.analysis.combiner", ["CombineParticles"]),
    ("algorithms.analysis.tuples", ["DecayTreeTuple", "MCDecayTreeTuple"]),
]


@hookimpl
def flashsim_register_components(registry):
    for module_name, names in BUILTIN_ALGORITHMS:
        module = importlib.import_module(module_name)
        for name in names:
            registry.add_algorithm(getattr(module, name))


@hookimpl
def flashsim_register_conditions(conditions):
    for tag, preset in PRESETS.items():
        conditions.add(tag, preset["values"], description=preset["description"], extrapolation=preset["extrapolation"])
