"""Reference detector ("teacher") for the RICH and MUON PID responses — NOT LHCb data.

A slow, physics-based stand-in for Geant4 + the LHCb reconstruction, built from published LHCb
performance figures (docs/pid_teacher.md).  It produces training samples for the flash PID models
(``python -m models.training.pid.make_teacher_samples``) and never runs in production options.
"""
from .physics import (cherenkov_angle, cherenkov_threshold, decay_probability, expected_photons, extrapolate,
                      highland_theta0, max_cherenkov_angle, muon_ms_sigma, muon_reach_probability,
                      refractive_index, species_index)
from .teacher import OUTPUT_COLUMNS, combine_dlls, rich_muon_response, teacher_response

__all__ = ["OUTPUT_COLUMNS", "cherenkov_angle", "cherenkov_threshold", "combine_dlls", "decay_probability",
           "expected_photons", "extrapolate", "highland_theta0", "max_cherenkov_angle", "muon_ms_sigma",
           "muon_reach_probability", "refractive_index", "rich_muon_response", "species_index",
           "teacher_response", "PIDTeacher"]


def __getattr__(name):  # the Algorithm needs the framework; import it lazily
    if name == "PIDTeacher":
        from .algorithm import PIDTeacher
        return PIDTeacher
    raise AttributeError(name)
