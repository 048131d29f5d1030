"""RecSummary: per-event counts of reconstructed objects (LHCb's ``Rec/Summary``).

``nTracks`` here is the number of reconstructed long + upstream + downstream tracks.  LHCb's
RecSummary nTracks also counts VELO-only and T-station-only tracks (track types 1, 6), which this
flash simulation does not produce, so our nTracks is systematically lower than LHCb's for the same
event (LHCb's 2016 minimum-bias nTracks is dominated by VELO tracks).  Multiplicity-dependent
parametrisations (e.g. PID models using nTracks) must be used with this definition in mind.

For particle-gun events (``/Event/Gen/Header.ntracks_override >= 0``), nTracks is the generator's
value (an occupancy sampled from minimum bias) instead of the count of the few gun tracks.
Unlike Lamarr (nTracks = exp(4.87 + 0.59 N(0,1)) placeholder) every count is derived from the
reconstructed objects.
"""
from __future__ import annotations

import numpy as np

from framework import Algorithm, Collection, Input, Output

__all__ = ["RecSummary", "summarize"]


def summarize(track_event_index, track_type, n_events, pv_counts, ntracks_override=None) -> dict:
    """Per-event counts (int32 arrays [n_events]).  ``track_type``: 3 long, 4 upstream,
    5 downstream; ``ntracks_override`` [n_events]: values >= 0 replace nTracks."""
    ev = np.asarray(track_event_index, dtype=np.int64)
    tt = np.asarray(track_type)
    out = {}
    for name, code in (("nLongTracks", 3), ("nUpstreamTracks", 4), ("nDownstreamTracks", 5)):
        out[name] = np.bincount(ev[tt == code], minlength=n_events).astype(np.int32)
    n = (out["nLongTracks"] + out["nUpstreamTracks"] + out["nDownstreamTracks"]).astype(np.int32)
    if ntracks_override is not None:
        o = np.asarray(ntracks_override)
        n = np.where(o >= 0, o, n).astype(np.int32)
    out = {"nTracks": n, **out, "nPVs": np.asarray(pv_counts, dtype=np.int32)}
    return out


class RecSummary(Algorithm):
    """Event summary: nTracks (long+upstream+downstream, or the generator override), per-type
    track counts and nPVs, from the reconstructed objects."""

    Tracks = Input("/Event/Rec/Tracks", "reconstructed tracks")
    Vertices = Input("/Event/Rec/Vertices", "reconstructed primary vertices")
    Header = Input("/Event/Gen/Header", "generator header (ntracks_override)")
    Summary = Output("/Event/Rec/Summary", "one row per event: nTracks, nLongTracks, nUpstreamTracks, "
                                           "nDownstreamTracks, nPVs")

    def execute(self, ctx, Tracks, Vertices, Header):
        override = Header["ntracks_override"] if "ntracks_override" in Header else None
        cols = summarize(Tracks.event_index, Tracks["type"], ctx.n_events, Vertices.counts, override)
        self.averaging_counter("nTracks").add(cols["nTracks"])
        self.averaging_counter("nPVs").add(cols["nPVs"])
        return Collection.per_event(cols, ctx.event_numbers)
