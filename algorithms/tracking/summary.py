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

import numba as nb
import numpy as np

from framework import Algorithm, Collection, Input, Output

__all__ = ["RecSummary", "summarize"]


@nb.njit(cache=True)
def _count_types(ev, tt, n_events):
    """Per event: numbers of type 3, 4, 5 tracks ([3, n_events] int32) and their sum (int32)."""
    counts = np.zeros((3, n_events), np.int32)
    total = np.zeros(n_events, np.int32)
    for i in range(ev.shape[0]):
        t = tt[i]
        if t == 3 or t == 4 or t == 5:
            counts[t - 3, ev[i]] += 1
            total[ev[i]] += 1
    return counts, total


def summarize(track_event_index, track_type, n_events, pv_counts, ntracks_override=None) -> dict:
    """Per-event counts (int32 arrays [n_events]).  ``track_type``: 3 long, 4 upstream,
    5 downstream; ``ntracks_override`` [n_events]: values >= 0 replace nTracks."""
    ev = np.ascontiguousarray(track_event_index, dtype=np.int64)
    tt = np.ascontiguousarray(track_type, dtype=np.int64)
    counts, n = _count_types(ev, tt, int(n_events))
    out = {"nLongTracks": counts[0], "nUpstreamTracks": counts[1], "nDownstreamTracks": counts[2]}
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
