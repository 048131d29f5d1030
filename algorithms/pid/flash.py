"""Flash PID: LHCb-Lamarr-like charged-particle identification from ONNX models (production).

Per reconstructed **long** track and per *true* species (e, mu, pi, K, p; as in Lamarr the
response is a function of the true species), four models of ``models/pid2016_{kind}_{species}``
are evaluated in a fixed order (see :mod:`algorithms.pid.features`):

1. ``ismuon`` classifier -> probabilities of the 6 joint classes of (hasRich, InMuonAcc, isMuon);
   one categorical draw from one counter uniform (stream 0);
2. ``rich`` generative model on the hasRich rows -> RichDLLe/mu/K/p (noise: stream 1);
3. ``muon`` generative model on the isMuon rows -> MuonMuLL, MuonBkgLL (noise: stream 2);
4. ``globalpid`` generative model on every long track -> PIDe/K/p, ProbNNe/pi/k/p, PIDmu, ProbNNmu,
   ProbNNghost (noise: stream 3).

Every random number is a counter-based draw keyed by (event number, track key, draw) with one key
per stream, where the track key is the MC index of the track (or 2**40 + the track's index within the
event for tracks without an MC link): results never depend on the batch composition.  One ONNX call
per (species, model) per batch (``Model.run`` chunks internally at fixed shapes).

Tracks that get no PID (not long, or a true species without a model -- e.g. a deuteron or a track
without MC link) carry :data:`~algorithms.pid.features.NO_PID_VALUES` and are counted; an unknown
species is reported once with a warning.  A model whose card does not match the expected interface
is a ConfigurationError at initialize.
"""
from __future__ import annotations

import difflib

import numba as nb
import numpy as np

from framework import Algorithm, Collection, ConfigurationError, Input, Output, Property
from framework.random import counter_uniform, row_key, row_normals

from .features import (
    GLOBALPID_OUTPUTS, MODEL_KINDS, MUON_OUTPUTS, NO_MUON, NO_PID_VALUES, NO_PROBNNMU,
    NO_RICH, NOISE_DIMS, PROTO_BOOL_COLUMNS, PROTO_FLOAT_COLUMNS, RICH_OUTPUTS, SPECIES,
    card_columns, decode_classes, globalpid_features, kinematic_features, pseudorapidity, rich_inputs_of,
    species_index, with_ismuon,
)

__all__ = ["FlashPID", "flash_pid_response", "check_pid_card", "model_path", "STREAMS", "NO_MC_KEY_OFFSET",
           "track_keys", "draw_uniform", "draw_normal"]

#: ctx.random stream of each model's draws
STREAMS = {"ismuon": 0, "rich": 1, "muon": 2, "globalpid": 3}
#: key offset of tracks without MC link (keyed by their index within the event instead)
NO_MC_KEY_OFFSET = 1 << 40
DEFAULT_PATTERN = "models/pid2016_{kind}_{species}.onnx"
_GPID = [c[0] for c in GLOBALPID_OUTPUTS]


@nb.njit(cache=True)
def _uniforms(key, events, indices):
    out = np.empty(events.shape[0], dtype=np.float64)
    for i in range(events.shape[0]):
        out[i] = counter_uniform(key, events[i], indices[i], 0)
    return out


@nb.njit(cache=True)
def _normals(key, events, indices, n):
    # row n-vector = row_normals(row_key(k, e, i), 0, .): the object is hashed once and both halves of every
    # Box-Muller pair are used (RandomStreams.normal's numbers; one log, sqrt and sincos per two normals)
    out = np.empty((events.shape[0], n), dtype=np.float32)
    buf = np.empty(n, dtype=np.float64)
    for i in range(events.shape[0]):
        row_normals(row_key(key, events[i], indices[i]), 0, buf)
        for j in range(n):
            out[i, j] = buf[j]
    return out


def draw_uniform(key, events, indices) -> np.ndarray:
    return _uniforms(np.uint64(key), np.ascontiguousarray(events, np.int64), np.ascontiguousarray(indices, np.int64))


def draw_normal(key, events, indices, n) -> np.ndarray:
    return _normals(np.uint64(key), np.ascontiguousarray(events, np.int64), np.ascontiguousarray(indices, np.int64),
                    int(n))


def track_keys(mc_index, local_index) -> np.ndarray:
    """Per-track counter key: the MC index, or NO_MC_KEY_OFFSET + index within the event."""
    mc = np.asarray(mc_index, dtype=np.int64)
    return np.where(mc >= 0, mc, NO_MC_KEY_OFFSET + np.asarray(local_index, dtype=np.int64))


def model_path(pattern: str, kind: str, species: str) -> str:
    return pattern.format(kind=kind, species=species)


def check_pid_card(model, kind: str, species: str, where: str = "FlashPID"):
    """ConfigurationError unless ``model``'s card has the inputs/outputs/noise of a ``kind`` model."""
    inputs, outputs = card_columns(kind)
    exp_in, exp_out = [c[0] for c in inputs], [c[0] for c in outputs]
    problems = []
    if kind == "rich":   # Lamarr's four kinematic inputs, or those and isMuon
        try:
            rich_inputs_of(model.input_names)
        except ValueError as e:
            problems.append(str(e))
    elif list(model.input_names) != exp_in:
        problems.append(f"inputs {list(model.input_names)} instead of {exp_in}")
    if list(model.output_names) != exp_out:
        problems.append(f"outputs {list(model.output_names)} instead of {exp_out}")
    if model.noise_dim != NOISE_DIMS[kind]:
        problems.append(f"noise dim {model.noise_dim} instead of {NOISE_DIMS[kind]}")
    card_species = model.card.get("species")
    if card_species is not None and card_species != species:
        problems.append(f"card is for species {card_species!r}, not {species!r}")
    if problems:
        raise ConfigurationError(f"{where}: {kind} model {model.path} for species {species!r} does not match the "
                                 "flash-PID interface: " + "; ".join(problems))


def flash_pid_response(models, species, p, eta, ntracks, charge, events, keys, stream_keys,
                       lamarr_muon_sentinels: bool = True, given: dict | None = None) -> dict:
    """Flash PID of a set of long tracks.

    models        {species index 0..4: {"ismuon"|"rich"|"muon"|"globalpid": model with .run(x, noise)}}
    species       [N] species index (-1 or a species absent from ``models``: no PID, NO_PID_VALUES)
    p, eta, ntracks, charge   [N] track momentum [MeV], pseudorapidity, event nTracks, charge
    events, keys  [N] counter-RNG keys (global event number, track key)
    stream_keys   {kind: uint64 key} (one independent stream per model)
    given         optional stage outputs used in place of the models' (diagnostics: which model a
                  difference comes from), arrays over all N tracks: "flags" (hasRich, InMuonAcc,
                  isMuon), "rich" [N, 4] (RichDLLe, mu, K, p), "muon" [N, 2] (MuonMuLL, MuonBkgLL);
                  rows without RICH / isMuon must hold the sentinels
    Returns {column: array [N]} with PROTO_FLOAT_COLUMNS (float32) and PROTO_BOOL_COLUMNS (bool),
    plus "modelled" (bool: the track got PID from a model).
    """
    species = np.asarray(species, dtype=np.int64)
    n = species.shape[0]
    out = {c: np.full(n, NO_PID_VALUES[c], dtype=np.float32) for c in PROTO_FLOAT_COLUMNS}
    out.update({c: np.zeros(n, dtype=bool) for c in PROTO_BOOL_COLUMNS})
    modelled = np.zeros(n, dtype=bool)
    events = np.asarray(events, dtype=np.int64)
    keys = np.asarray(keys, dtype=np.int64)
    kin_all = kinematic_features(p, eta, ntracks, charge)
    for s, mods in models.items():
        rows = np.flatnonzero(species == s)
        if rows.size == 0:
            continue
        modelled[rows] = True
        ev, ix, kin = events[rows], keys[rows], kin_all[rows]
        m = rows.size
        if given and "flags" in given:
            has_rich, in_acc, is_mu = (np.asarray(f, dtype=bool)[rows] for f in given["flags"])
        else:
            probs = mods["ismuon"].run(kin)
            has_rich, in_acc, is_mu = decode_classes(probs, draw_uniform(stream_keys["ismuon"], ev, ix))
        rich = np.full((m, 4), NO_RICH, dtype=np.float32)
        if given and "rich" in given:
            rich[:] = np.asarray(given["rich"], dtype=np.float32)[rows]
        elif has_rich.any():
            r = np.flatnonzero(has_rich)
            xr = with_ismuon(kin[r], is_mu[r] if rich_inputs_of(mods["rich"].input_names) else None)
            rich[r] = mods["rich"].run(xr, draw_normal(stream_keys["rich"], ev[r], ix[r], len(RICH_OUTPUTS)))
        muon = np.full((m, 2), NO_MUON, dtype=np.float32)
        if given and "muon" in given:
            muon[:] = np.asarray(given["muon"], dtype=np.float32)[rows]
        elif is_mu.any():
            r = np.flatnonzero(is_mu)
            muon[r] = mods["muon"].run(kin[r], draw_normal(stream_keys["muon"], ev[r], ix[r], len(MUON_OUTPUTS)))
        g = mods["globalpid"].run(globalpid_features(kin, rich, is_mu, muon, has_rich, in_acc),
                                  draw_normal(stream_keys["globalpid"], ev, ix, len(GLOBALPID_OUTPUTS)))
        for j, name in enumerate(("RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp")):
            out[name][rows] = rich[:, j]
        out["MuonMuLL"][rows] = muon[:, 0]
        out["MuonBkgLL"][rows] = muon[:, 1]
        for j, name in enumerate(_GPID):
            out[name][rows] = g[:, j]
        if lamarr_muon_sentinels:
            out["ProbNNmu"][rows] = np.where(is_mu, g[:, _GPID.index("ProbNNmu")], NO_PROBNNMU)
        out["hasRich"][rows] = has_rich
        out["InMuonAcc"][rows] = in_acc
        out["isMuon"][rows] = is_mu
    out["modelled"] = modelled
    return out


class FlashPID(Algorithm):
    """Flash charged PID (LHCb-Lamarr interface): isMuon/hasRich/InMuonAcc, RICH DLLs, muon LLs,
    combined DLLs and ProbNN per long track, per true species, from ONNX models.

    Output ``/Event/Rec/ProtoParticles``: one row per row of ``/Event/Rec/Tracks`` (same order
    and counts) with RichDLLe/mu/K/p, MuonMuLL, MuonBkgLL, PIDe/mu/K/p, ProbNNe/mu/pi/k/p/ghost
    (float32) and isMuon, hasRich, InMuonAcc (bool).  Tracks of other types or of species
    without a model get the documented no-PID values (docs/pid_flash.md) and are counted.
    Models trained on the flashsim reference detector (teacher), not on LHCb data.
    """

    Tracks = Input("/Event/Rec/Tracks", "reconstructed tracks (mc_index, type, tx, ty, p, charge)")
    Particles = Input("/Event/MC/Particles", "MC particles (true species via the track's mc_index)")
    Summary = Input("/Event/Rec/Summary", "per-event summary with nTracks")
    ProtoParticles = Output("/Event/Rec/ProtoParticles", "flash PID per track, same rows as the tracks")
    ModelPattern = Property(str, DEFAULT_PATTERN,
                            "model file pattern with {kind} (ismuon, rich, muon, globalpid) and {species}")
    Species = Property(list, list(SPECIES), "true species that get PID (subset of e, mu, pi, K, p)", item_type=str)
    TrackTypes = Property(list, [3], "track types that get PID (3 long; Lamarr: long only)", item_type=int)
    LamarrMuonSentinels = Property(bool, True, "ProbNNmu = -1 when isMuon is false (Lamarr convention)")

    def initialize(self):
        for s in self.Species:
            if s not in SPECIES:
                hint = difflib.get_close_matches(s, SPECIES, n=1)
                raise ConfigurationError(f"{self.name}.Species: unknown species {s!r}; expected a subset of "
                                         f"{list(SPECIES)}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        if "{kind}" not in self.ModelPattern or "{species}" not in self.ModelPattern:
            raise ConfigurationError(f"{self.name}.ModelPattern must contain {{kind}} and {{species}}, got "
                                     f"{self.ModelPattern!r}")
        self.models = {}
        for s in self.Species:
            i = SPECIES.index(s)
            self.models[i] = {}
            for kind in MODEL_KINDS:
                model = self.load_model(model_path(self.ModelPattern, kind, s))
                check_pid_card(model, kind, s, where=self.name)
                self.models[i][kind] = model
        self._warned = set()

    def execute(self, ctx, Tracks, Particles, Summary):
        n = len(Tracks)
        ev_local = Tracks.event_index
        if np.any(Summary.counts != 1):
            raise ValueError(f"{self.name}: {self.Summary} must have exactly one row per event")
        mc = np.asarray(Tracks["mc_index"], dtype=np.int64)
        gi = Particles.global_index(ev_local, mc)
        pid = np.where(gi >= 0, np.asarray(Particles["pid"])[np.maximum(gi, 0)], 0)
        sp = species_index(pid).astype(np.int64)
        ttype = np.asarray(Tracks["type"])
        use = np.isin(ttype, np.asarray(self.TrackTypes))
        has_model = np.isin(sp, np.asarray(list(self.models), dtype=np.int64))
        no_model = use & ~has_model
        if no_model.any():
            for a in np.unique(np.abs(pid[no_model])):
                if a not in self._warned:
                    self._warned.add(a)
                    what = "tracks without MC link" if a == 0 else f"true |PDG id| {a}"
                    self.warning(f"no flash-PID model for {what}: such tracks get no-PID values "
                                 "(counter 'no model for species'); reported once")
        sp = np.where(use & has_model, sp, -1)
        events = np.asarray(ctx.event_numbers, dtype=np.int64)[ev_local]
        keys = track_keys(mc, Tracks.local_index)
        stream_keys = {k: ctx.random.key_for(v) for k, v in STREAMS.items()}
        with np.errstate(divide="ignore"):
            eta = pseudorapidity(Tracks["tx"], Tracks["ty"])
        nt = np.asarray(Summary["nTracks"], dtype=np.float64)[ev_local]
        out = flash_pid_response(self.models, sp, Tracks["p"], eta, nt, Tracks["charge"], events, keys,
                                 stream_keys, lamarr_muon_sentinels=self.LamarrMuonSentinels)
        modelled = out.pop("modelled")
        self.counter("tracks").increment(n)
        self.counter("tracks with flash PID").increment(int(modelled.sum()))
        self.counter("not of a PID track type").increment(int((~use).sum()))
        self.counter("no model for species").increment(int(no_model.sum()))
        if modelled.any():
            self.binomial_counter("isMuon").add(out["isMuon"][modelled])
            self.binomial_counter("hasRich").add(out["hasRich"][modelled])
        cols = {c: out[c] for c in PROTO_FLOAT_COLUMNS + PROTO_BOOL_COLUMNS}
        return Collection(cols, Tracks.offsets, event_numbers=Tracks.event_numbers)
