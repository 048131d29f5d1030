"""Generators: particle data, decay descriptors, phase-space decays and the particle gun.

* :mod:`.particle_table` - ``ParticleTable`` (PDG data from `particle`, dense vectorised look-ups).
* :mod:`.descriptors` - LHCb decay descriptors -> ``DecayNode`` trees (``parse_descriptor``).
* :mod:`.phasespace` - numba n-body phase-space decays (Raubold-Lynch), Breit-Wigner masses,
  lifetimes.
* :mod:`.spectra` - FlatP / FlatPt / BHadron momentum spectra.
* :mod:`.occupancy` - nTracks sampling for gun events.
* :mod:`.particle_gun` - ``ParticleGun`` Algorithm (register it from ``algorithms/plugin.py``).
"""
from ..common.descriptors import DecayDescriptor, DecayNode, parse_descriptor
from ..common.particle_table import ParticleTable, default_table

__all__ = ["DecayDescriptor", "DecayNode", "parse_descriptor", "ParticleTable", "default_table"]
