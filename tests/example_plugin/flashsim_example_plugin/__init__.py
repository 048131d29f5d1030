"""A complete third-party flashsim plugin (the README's example): count particles above a pT cut."""
import numpy as np

from framework import Algorithm, Collection, Input, Output, Property, hookimpl


class HighPtParticles(Algorithm):
    """Selects MC particles with pT above a threshold."""

    MinPT = Property(float, 1000.0, "minimum transverse momentum [MeV]")
    Particles = Input("/Event/MC/Particles", "generator-level particles")
    Selected = Output("/Event/Phys/HighPt/Particles", "particles above MinPT")

    def execute(self, ctx, Particles):
        pt = np.hypot(Particles["px"], Particles["py"])
        keep = pt > self.MinPT
        self.binomial_counter("pT > MinPT").add(keep)
        return Particles.select(keep)


@hookimpl
def flashsim_register_components(registry):
    registry.add_algorithm(HighPtParticles)
