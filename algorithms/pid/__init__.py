"""Particle identification (PID).

``algorithms.pid.teacher`` is the *reference detector (teacher)*: a slow, physics-based RICH and
MUON response built from published LHCb performance figures.  It produces training samples for the
flash PID models and never runs in production options.  It is **not LHCb data**.
"""
