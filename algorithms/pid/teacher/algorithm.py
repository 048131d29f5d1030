"""``PIDTeacher``: the reference-detector (teacher) PID response as a framework Algorithm.

REFERENCE DETECTOR (TEACHER), NOT LHCb DATA.  It stands in for Geant4 + the LHCb reconstruction to
produce training samples for the flash PID models; it never runs in production options.
"""
from __future__ import annotations

import numpy as np

from framework import Algorithm, Collection, ConfigurationError, Input, Output, Property

from .teacher import OUTPUT_COLUMNS, teacher_response

__all__ = ["PIDTeacher"]

_BOOL = {"hasRich", "isMuon", "InMuonAcc"}


class PIDTeacher(Algorithm):
    """Reference-detector (teacher) RICH + MUON PID response — training samples only, not LHCb data.

    Photon-level RICH likelihoods (C4F10, CF4), muon-station hits in fields of interest with
    multiple scattering, decays in flight and punch-through, isMuon, MuonMuLL/MuonBkgLL, combined DLLs
    and ProbNN, one row per reconstructed track.  Built from published LHCb performance figures
    (docs/pid_teacher.md).  Slow compared with the flash PID models; never part of production options.
    """

    Tracks = Input("/Event/Rec/Tracks", "reconstructed tracks (closest-to-beam state, p, charge, mc_index)")
    Particles = Input("/Event/MC/Particles", "MC particles (true species, origin vertex)")
    Vertices = Input("/Event/MC/Vertices", "MC vertices (production z for decays in flight)")
    Summary = Input("/Event/Rec/Summary", "per-event summary with nTracks")
    TeacherPID = Output("/Event/Rec/TeacherPID", "teacher PID response, one row per track")
    RandomStream = Property(int, 0, "ctx.random stream used for the teacher's counter-based draws")
    Diagnostics = Property(bool, False, "also write diagnostic columns (photon counts, muon hits, decays)")

    def initialize(self):
        if self.RandomStream < 0:
            raise ConfigurationError(f"{self.name}.RandomStream must be >= 0, got {self.RandomStream}")
        from .probnn import ProbNN
        try:
            self._probnn = ProbNN.load()
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigurationError(f"{self.name}: cannot load the teacher ProbNN weights: {exc}") from exc
        self.warning("PIDTeacher is the reference detector (teacher), not LHCb data: use it to make training samples only")

    def execute(self, ctx, Tracks, Particles, Vertices, Summary):
        ev_local = Tracks.event_index
        mc = np.asarray(Tracks["mc_index"], dtype=np.int64)
        gi = Particles.global_index(ev_local, mc)
        has_mc = gi >= 0
        pid = np.where(has_mc, Particles["pid"][np.maximum(gi, 0)], 211)
        ov = np.where(has_mc, Particles["origin_vertex"][np.maximum(gi, 0)], -1)
        gv = Vertices.global_index(ev_local, ov)
        prod_z = np.where(gv >= 0, Vertices["z"][np.maximum(gv, 0)], Tracks["z"])
        if np.any(Summary.counts != 1):
            raise ValueError(f"{self.name}: {self.Summary} must have exactly one row per event")
        ntracks = np.asarray(Summary["nTracks"], dtype=np.float64)[ev_local]
        events = np.asarray(ctx.event_numbers, dtype=np.int64)[ev_local]
        key = ctx.random.key_for(self.RandomStream)
        out = teacher_response(pid, Tracks["p"], Tracks["x"], Tracks["y"], Tracks["z"], Tracks["tx"], Tracks["ty"],
                               Tracks["charge"], ntracks, prod_z, events, Tracks.local_index, key,
                               probnn=self._probnn)
        cols = {c: (np.asarray(out[c], dtype=bool) if c in _BOOL else np.asarray(out[c], dtype=np.float32))
                for c in OUTPUT_COLUMNS}
        if self.Diagnostics:
            cols.update(nSignalPhotonsRich1=out["nSignalPhotons"][:, 0], nSignalPhotonsRich2=out["nSignalPhotons"][:, 1],
                        nMuonHits=out["nMuonHits"], decayedToMuon=out["decayedToMuon"])
        self.counter("tracks").increment(len(Tracks))
        self.counter("tracks without MC link").increment(int((~has_mc).sum()))
        self.binomial_counter("hasRich").add(cols["hasRich"])
        self.binomial_counter("isMuon").add(cols["isMuon"])
        return Collection(cols, Tracks.offsets, event_numbers=Tracks.event_numbers)
