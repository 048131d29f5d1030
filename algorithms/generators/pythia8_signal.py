"""Pythia 8 signal production the way LHCb's generation phase does it.

LHCb (Gauss ``SignalRepeatedHadronization``) does not force decays in Pythia: it generates a
minimum-bias parton-level event, hadronises it, and if the event contains the signal quark
(b or c) at parton level it re-hadronises the *same* parton-level event until a signal hadron
appears; the generator-level cut is then applied once to the signal candidates; if one passes it
is chosen at random and decayed in the requested channel, otherwise the parton-level event is
abandoned.  Every other particle (including the other signal-species hadrons) decays generically.
Pythia's ``onMode``/``onIfMatch`` would instead force the channel on *every* B+- of the event.

Implementation with pythia8mc (:class:`PythiaSignalProducer`):

1. A dedicated Pythia instance runs with ``HadronLevel:all = off`` so that ``next()`` stops at
   parton level; the record is copied (``Event`` copy constructor) for the re-hadronisations.
2. **Trial hadronisations** (``forceHadronLevel``) run in "trial mode": every decaying species
   except the hadrons carrying the signal quark (b; for a charm signal c or b) has ``mayDecay``
   off (restored afterwards), so a trial costs little more than the string fragmentation.
3. A ``DecayHandler`` registered for all those heavy-flavour hadrons is called by Pythia (C++)
   whenever one of them decays and always answers "decay it yourself" (returns False); it only
   records (entry index, id, four-momentum) of the signal-species decays.  That gives, with no
   Python loop over particles, both LHCb's parton-level test (no heavy-flavour hadron decayed =>
   no signal quark at parton level => next parton-level event, as in Gauss) and the list of
   signal candidates.
4. Candidates present: each is decayed in the requested channel by the phase-space decayer
   (:func:`decay_candidates`, numba, counter-based random numbers keyed by (event, trial,
   candidate, node)) and the generator-level cut is applied (``DaughtersInLHCb`` needs the
   decay); none passes => parton-level event abandoned (Gauss does not re-hadronise a parton
   event whose candidates failed the cut, "not to bias things").  Else one passing candidate is
   chosen uniformly (counter-based draw).
5. The chosen hadron's generic decay is removed (``Particle::undoDecay``), its phase-space decay
   is appended to the Pythia record (mother/daughter links, production vertices: the signal
   decays at Pythia's own proper time ``tau``, the descriptor's intermediate resonances with
   ``ct`` drawn from the PDG lifetime of ``particle``), the descriptor's final-state particles
   get a PDG proper time too, mayDecay is restored for every species and ``forceHadronLevel``
   runs once more: Pythia decays everything still undecayed (charm from the other b decays,
   light hadrons, any descriptor daughter whose decay the descriptor does not specify), with its
   usual rules (``ParticleDecays:limitTau0`` ...) and Check:event validation.  Nothing else is
   forced: the other signal-species hadrons of the event keep their generic decays.
6. The final records of a batch are read columnar through a *reader* Pythia instance with
   every level off, fed by a ``UserHooks.onBeginEvent`` callback (one ``nextBatch`` per batch).

The signal collision is collision 0 of the crossing; the other collisions (Poisson pile-up from
the Conditions) are minimum bias from a second instance (``PileUpCommands``), generated and
seeded exactly as :class:`~algorithms.generators.pythia8.Pythia8Generator` does.  Everything
in an event is seeded from the event number (signal instance: ``rndm.init`` per event; the
trials continue Pythia's sequence), so event N is identical for any batching or sharding.

Remaining biases (see docs/hepmc_pythia.md):

* repeated hadronisation weights a parton-level event with b quarks by
  P(at least one signal hadron in up to ``MaxHadronisations`` trials) ~ 1 instead of by
  P(signal hadron | partons): events with several b pairs are under-weighted relative to plain
  minimum bias (as in LHCb);
* the requested channel is decayed with n-body phase space (no EvtGen models, spin
  correlations or form factors); resonance masses are (truncated) Breit-Wigner from `particle`;
* the cut is evaluated on the phase-space decay (no further decays of the descriptor's
  final-state particles, like ``DaughtersInLHCb`` at generator level in Gauss);
* for B0/Bs signals Pythia's mixing decides the flavour at decay: the candidate's decay flavour
  (``idProd[0]`` of the handler) selects the descriptor branch; the record keeps the production
  flavour for the mother.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numba as nb
import numpy as np

from framework import ConfigurationError, Output, Property
from framework.random import counter_uniform

from . import phasespace as ps
from ..common.descriptors import flatten, parse_descriptor
from ..common.particle_table import ParticleTable, default_table
from .pythia8 import (
    GEV,
    Pythia8Generator,
    batch_arrays,
    concat_batch_arrays,
    configure_pythia,
    gather_collisions,
    generate_batch,
    make_batch_hooks,
    pythia_seeds_from_uniform,
    strip_system,
    truth_collections,
)

__all__ = [
    "SIGNAL_CUTS",
    "STREAM_SIGNAL_SEED",
    "STREAM_DECAY",
    "STREAM_CHOICE",
    "signal_quark",
    "is_heavy_flavour",
    "decay_candidates",
    "passes_cut",
    "SignalDecayModel",
    "make_signal_recorder",
    "append_signal_decay",
    "SignalOutcome",
    "PythiaSignalProducer",
    "Pythia8SignalGenerator",
]

# random streams (Pythia8Generator uses 0, 1, 2 for pile-up seeds, collision counts and PVs)
STREAM_SIGNAL_SEED = 3
STREAM_DECAY = 4
STREAM_CHOICE = 5

CUT_SIGNAL_IN_ETA = 10
CUT_SIGNAL_IN_LHCB = 11
SIGNAL_CUTS = {
    "None": ps.CUT_NONE,
    "DaughtersInLHCb": ps.CUT_DAUGHTERS_IN_LHCB,
    "ChargedDaughtersInEta": ps.CUT_CHARGED_IN_ETA,
    "SignalInEta": CUT_SIGNAL_IN_ETA,
    "SignalInLHCb": CUT_SIGNAL_IN_LHCB,
}
SIGNAL_STATUS_PYTHIA = 91  # Pythia status of the appended decay products (normal decay products)
_MAX_CANDIDATES = 255


# ------------------------------------------------------------------------------------------
# flavour helpers
# ------------------------------------------------------------------------------------------
def signal_quark(pid: int) -> int:
    """5 for a b hadron, 4 for a charm hadron (no b); ConfigurationError otherwise."""
    from particle import pdgid

    if pdgid.has_bottom(int(pid)):
        return 5
    if pdgid.has_charm(int(pid)):
        return 4
    raise ConfigurationError(
        f"signal production needs a b or c hadron as the descriptor head, got PDG id {pid} "
        "(use Pythia8Generator for minimum bias)")


def is_heavy_flavour(pid: int, quark: int) -> bool:
    """Hadron whose decays reveal the signal quark: b-flavoured (quark 5), c- or b-flavoured
    (quark 4)."""
    from particle import pdgid

    pid = int(pid)
    if abs(pid) < 100:
        return False
    if pdgid.has_bottom(pid):
        return True
    return quark == 4 and bool(pdgid.has_charm(pid))


# ------------------------------------------------------------------------------------------
# phase-space decay of the candidates and generator-level cut (pure, numba)
# ------------------------------------------------------------------------------------------
@nb.njit(cache=True)
def decay_candidates(key, event, trial, cand_index, p4, mhead, first, ndau, m0, width, mlo, mhi,
                     ctau, max_redraw):
    """Phase-space decay trees of signal candidates (one per row of ``p4`` [nc, 4], MeV).

    Node arrays (breadth-first, :class:`~algorithms.common.descriptors.FlatTree`): ``first``,
    ``ndau``, masses ``m0``/``width``/``mlo``/``mhi`` [MeV], ``ctau`` [mm] (0 = none).  Node 0 is
    the candidate, with mass ``mhead`` (Pythia's).  Random numbers: ``counter_uniform(key, event,
    (trial << 16) | (cand_index << 8) | node, draw)``: draw 0 the proper decay length, 2... the
    masses and the Raubold-Lynch decay (as :mod:`~algorithms.generators.phasespace`).

    Returns ``(ok [nc], px, py, pz, E, mass, ct [nc, n_nodes])``; ``ok`` is False if the
    daughters' masses did not fit in ``max_redraw`` draws (candidate then fails the cut).
    """
    nc = p4.shape[0]
    nn = first.shape[0]
    px = np.zeros((nc, nn))
    py = np.zeros((nc, nn))
    pz = np.zeros((nc, nn))
    pe = np.zeros((nc, nn))
    mass = np.zeros((nc, nn))
    ct = np.zeros((nc, nn))
    ok = np.ones(nc, dtype=np.bool_)
    dm = np.empty(16)
    out = np.empty((16, 4))
    work = np.empty((3, 16))
    tbase = np.uint64(trial) << np.uint64(16)
    for c in range(nc):
        px[c, 0] = p4[c, 0]
        py[c, 0] = p4[c, 1]
        pz[c, 0] = p4[c, 2]
        pe[c, 0] = p4[c, 3]
        mass[c, 0] = mhead[c]
        cbase = tbase | (np.uint64(cand_index[c]) << np.uint64(8))
        for i in range(nn):
            idx = cbase | np.uint64(i)
            if ctau[i] > 0.0:
                ct[c, i] = -ctau[i] * math.log(counter_uniform(key, event, idx, 0))
            n = ndau[i]
            if n == 0:
                continue
            f = first[i]
            M = mass[c, i]
            draw = 2
            tries = 0
            while True:
                s, draw = ps.draw_daughter_masses(f, n, m0, width, mlo, mhi, key, event, idx, draw, dm)
                if s < M:
                    break
                tries += 1
                if tries >= max_redraw:
                    ok[c] = False
                    break
            if not ok[c]:
                break
            draw = ps.decay_at_rest(M, dm, n, out, work, key, event, idx, draw)
            for j in range(n):
                d = f + j
                mass[c, d] = dm[j]
                qx, qy, qz, qe = ps.boost_from_rest(out[j, 0], out[j, 1], out[j, 2], out[j, 3],
                                                    px[c, i], py[c, i], pz[c, i], pe[c, i], M)
                px[c, d] = qx
                py[c, d] = qy
                pz[c, d] = qz
                pe[c, d] = qe
    return ok, px, py, pz, pe, mass, ct


def passes_cut(mode: int, params, cls, px, py, pz) -> np.ndarray:
    """Generator-level cut of decayed candidates (arrays [nc, n_nodes], node 0 = signal).

    ``cls`` per node: 0 ignored (decayed, neutrino), 1 charged, 2 neutral (as the particle gun).
    Modes: None; DaughtersInLHCb (pz > 0 and polar angle in [params[0], params[1]] rad for
    charged, [params[2], params[3]] for neutral); ChargedDaughtersInEta (charged stable daughters
    in [params[0], params[1]]); SignalInEta (the signal hadron's eta in [params[0], params[1]]);
    SignalInLHCb (the signal hadron's pz > 0 and polar angle < params[1], LHCb's
    ``LHCbAcceptance``)."""
    px, py, pz = (np.asarray(a, dtype=np.float64) for a in (px, py, pz))
    nc = px.shape[0]
    if mode == ps.CUT_NONE:
        return np.ones(nc, dtype=bool)
    pt = np.hypot(px, py)
    if mode in (CUT_SIGNAL_IN_ETA, CUT_SIGNAL_IN_LHCB):
        pt0, pz0 = pt[:, 0], pz[:, 0]
        if mode == CUT_SIGNAL_IN_LHCB:
            return (pz0 > 0) & (np.arctan2(pt0, pz0) <= params[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.arcsinh(np.where(pt0 > 0, pz0 / np.where(pt0 > 0, pt0, 1.0), 0.0))
        return (pt0 > 0) & (eta >= params[0]) & (eta <= params[1])
    cls = np.asarray(cls)
    charged = cls == ps.CLASS_CHARGED
    neutral = cls == ps.CLASS_NEUTRAL
    if mode == ps.CUT_DAUGHTERS_IN_LHCB:
        theta = np.arctan2(pt, pz)
        ok_c = (pz > 0) & (theta >= params[0]) & (theta <= params[1])
        ok_n = (pz > 0) & (theta >= params[2]) & (theta <= params[3])
        good = np.where(charged, ok_c, np.where(neutral, ok_n, True))
        return good.all(axis=1)
    if mode == ps.CUT_CHARGED_IN_ETA:
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.arcsinh(pz / np.where(pt > 0, pt, 1.0))
        ok_c = (pt > 0) & (eta >= params[0]) & (eta <= params[1])
        return np.where(charged, ok_c, True).all(axis=1)
    raise ValueError(f"unknown cut mode {mode}")


class SignalDecayModel:
    """The requested signal decay (descriptor, both charge states if ``[...]cc``) and the
    generator-level cut, independent of Pythia.

    ``alternative(pid)`` -> index of the descriptor branch whose head is ``pid`` (-1 if none);
    :meth:`decay` decays candidates, :meth:`passes` applies the cut.
    """

    def __init__(self, descriptor: str, table: ParticleTable | None = None, cut: str = "DaughtersInLHCb",
                 cut_eta_range=(2.0, 5.0), charged_theta_mrad=(10.0, 400.0), neutral_theta_mrad=(5.0, 400.0),
                 signal_theta_max_mrad: float = 400.0, bw_cutoff: float = 5.0, max_redraw: int = 1000):
        self.table = table or default_table()
        self.descriptor = parse_descriptor(descriptor, self.table)
        alts = self.descriptor.alternatives(self.table)
        if bw_cutoff <= 0:
            raise ConfigurationError(f"BreitWignerCutoff must be > 0, got {bw_cutoff}")
        self.trees = [flatten(a, self.table, bw_cutoff) for a in alts]
        if any(int(t.n_daughters.max()) > 16 for t in self.trees):
            raise ConfigurationError("at most 16 daughters per decay are supported")
        self.head_pids = np.array([int(t.pid[0]) for t in self.trees], dtype=np.int64)
        self.quark = signal_quark(int(self.head_pids[0]))
        self.max_redraw = int(max_redraw)
        if cut not in SIGNAL_CUTS:
            import difflib

            hint = difflib.get_close_matches(str(cut), list(SIGNAL_CUTS), n=1)
            raise ConfigurationError(f"GeneratorCut {cut!r} unknown; expected one of {list(SIGNAL_CUTS)}"
                                     + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        self.cut = cut
        self.cut_mode = SIGNAL_CUTS[cut]
        if self.cut_mode in (ps.CUT_CHARGED_IN_ETA, CUT_SIGNAL_IN_ETA):
            lo, hi = (float(x) for x in cut_eta_range)
            if not lo < hi:
                raise ConfigurationError(f"CutEtaRange must be [min, max] with min < max, got {list(cut_eta_range)}")
            self.cut_params = np.array([lo, hi, 0.0, 0.0])
        else:
            c = [float(x) * 1e-3 for x in charged_theta_mrad]
            n = [float(x) * 1e-3 for x in neutral_theta_mrad]
            if len(c) != 2 or len(n) != 2 or not (0 <= c[0] < c[1]) or not (0 <= n[0] < n[1]):
                raise ConfigurationError("ChargedThetaRange/NeutralThetaRange must be [min, max] in mrad, "
                                         f"got {list(charged_theta_mrad)}, {list(neutral_theta_mrad)}")
            if not signal_theta_max_mrad > 0:
                raise ConfigurationError(f"SignalThetaMax must be > 0 mrad, got {signal_theta_max_mrad}")
            if self.cut_mode == CUT_SIGNAL_IN_LHCB:
                c = [0.0, float(signal_theta_max_mrad) * 1e-3]
            self.cut_params = np.array([c[0], c[1], n[0], n[1]])
        # cut classes per node (identical for the conjugate branch)
        from particle import pdgid

        t = self.trees[0]
        q = self.table.charge(t.pid)
        cls = np.where(np.abs(q) > 0, ps.CLASS_CHARGED, ps.CLASS_NEUTRAL).astype(np.int8)
        for i, pid in enumerate(t.pid):
            if t.n_daughters[i] > 0 or (pdgid.is_lepton(int(pid)) and q[i] == 0):
                cls[i] = ps.CLASS_IGNORE
        self.cut_class = cls

    @property
    def n_nodes(self) -> int:
        return self.trees[0].n_nodes

    def alternative(self, pid: int) -> int:
        hit = np.flatnonzero(self.head_pids == int(pid))
        return int(hit[0]) if hit.size else -1

    def decay(self, key, event: int, trial: int, alt, p4_mev, m_mev):
        """Decay candidates (``alt`` [nc] branch index, ``p4_mev`` [nc, 4], ``m_mev`` [nc]).
        Returns ``(ok, px, py, pz, E, mass, ct)`` ([nc] and [nc, n_nodes]; MeV, mm)."""
        alt = np.asarray(alt, dtype=np.int64)
        p4 = np.ascontiguousarray(p4_mev, dtype=np.float64).reshape(-1, 4)
        m = np.ascontiguousarray(m_mev, dtype=np.float64).reshape(-1)
        nc, nn = p4.shape[0], self.n_nodes
        if nc > _MAX_CANDIDATES:
            raise RuntimeError(f"{nc} signal candidates in one hadronisation (at most {_MAX_CANDIDATES})")
        res = [np.ones(nc, dtype=bool)] + [np.zeros((nc, nn)) for _ in range(6)]
        for a in np.unique(alt):
            rows = np.flatnonzero(alt == a)
            t = self.trees[int(a)]
            out = decay_candidates(np.uint64(key), np.int64(event), np.int64(trial), rows.astype(np.int64),
                                   p4[rows], m[rows], t.first_daughter.astype(np.int64),
                                   t.n_daughters.astype(np.int64), t.mass, t.width, t.mlo, t.mhi, t.ctau,
                                   self.max_redraw)
            for r, o in zip(res, out):
                r[rows] = o
        return tuple(res)

    def passes(self, decayed) -> np.ndarray:
        ok, px, py, pz = decayed[:4]
        return np.asarray(ok, dtype=bool) & passes_cut(self.cut_mode, self.cut_params, self.cut_class, px, py, pz)


# ------------------------------------------------------------------------------------------
# Pythia side
# ------------------------------------------------------------------------------------------
def make_signal_recorder(signal_ids):
    """A ``pythia8mc.DecayHandler`` that never decays anything itself (returns False, so Pythia
    decays the particle internally) but counts the calls (``n_calls``) and records the decays of
    the ``signal_ids`` species: ``candidates`` = list of (entry index, id at decay, px, py, pz, e,
    m) [GeV]."""
    import pythia8mc

    ids = frozenset(int(x) for x in signal_ids)

    class SignalRecorder(pythia8mc.DecayHandler):
        def __init__(self):
            super().__init__()
            self.signal_ids = ids
            self.n_calls = 0
            self.candidates = []

        def reset(self):
            self.n_calls = 0
            self.candidates = []

        def decay(self, idProd, mProd, pProd, iDec, event):  # noqa: N803 - Pythia's names
            self.n_calls += 1
            pid = idProd[0]
            if pid in self.signal_ids:
                p = pProd[0]
                self.candidates.append((iDec, pid, p.px(), p.py(), p.pz(), p.e(), mProd[0]))
            return False

    return SignalRecorder()


def append_signal_decay(event, head: int, tree, px, py, pz, pe, mass, ct) -> int:
    """Append the decay tree of the (undecayed) entry ``head`` of the Pythia ``event``.

    ``tree`` is the branch's :class:`FlatTree`; ``px..mass`` [MeV] and ``ct`` [mm] per node
    (node 0 = head, whose own decay point is Pythia's ``vDec()``, i.e. its Pythia proper time).
    Decayed descriptor nodes get status -91 and daughters, the others +91 and a proper time
    ``tau = ct`` (Pythia decays them later if they are unstable).  Returns the index of the first
    appended entry.  A Python step per descriptor node (a handful per event)."""
    nn = tree.n_nodes
    base = event.size()
    vdec = event[head].vDec()
    dec = np.zeros((nn, 4))
    dec[0] = (vdec.px(), vdec.py(), vdec.pz(), vdec.e())
    first = tree.first_daughter
    ndau = tree.n_daughters
    for i in range(1, nn):
        p = int(tree.parent[i])
        decayed = ndau[i] > 0
        mother = head if p == 0 else base + p - 1
        d1 = base + int(first[i]) - 1 if decayed else 0
        d2 = d1 + int(ndau[i]) - 1 if decayed else 0
        k = event.append(int(tree.pid[i]), -SIGNAL_STATUS_PYTHIA if decayed else SIGNAL_STATUS_PYTHIA,
                         mother, 0, d1, d2, 0, 0, px[i] / GEV, py[i] / GEV, pz[i] / GEV, pe[i] / GEV,
                         mass[i] / GEV)
        prod = dec[p]
        part = event[k]
        part.vProd(float(prod[0]), float(prod[1]), float(prod[2]), float(prod[3]))
        part.tau(float(ct[i]))
        if decayed and mass[i] > 0:
            f = ct[i] / mass[i]
            dec[i] = prod + f * np.array([px[i], py[i], pz[i], pe[i]])
    h = event[head]
    h.statusNeg()
    h.daughters(base + int(first[0]) - 1, base + int(first[0]) + int(ndau[0]) - 2)
    return base


@dataclass
class SignalOutcome:
    """One signal interaction: the final Pythia ``event`` (a copy), the entry index of the signal
    hadron, its descriptor branch, and the counts of the generation."""

    event: object
    head: int
    alt: int
    parton_events: int
    hadronisations: int
    quark_events: int
    signal_interactions: int
    candidates: int
    candidates_passed: int
    failures: int
    pythia_seconds: float


class PythiaSignalProducer:
    """Owns the signal Pythia instance (parton level + repeated hadronisation), its decay
    recorder and the reader instance; :meth:`produce` makes one signal interaction.

    ``commands``: the user's Pythia settings for the signal interaction (``HadronLevel:all = off``
    is appended).  ``model``: :class:`SignalDecayModel`.
    """

    def __init__(self, commands, sqrt_s_gev: float, model: SignalDecayModel, max_hadronisations: int = 500,
                 max_parton_events: int = 1_000_000, quiet: bool = True):
        import pythia8mc

        self.model = model
        self.max_hadronisations = int(max_hadronisations)
        self.max_parton_events = int(max_parton_events)
        if self.max_hadronisations < 1 or self.max_parton_events < 1:
            raise ConfigurationError("MaxHadronisations and MaxPartonEvents must be >= 1")
        # every species Pythia knows (ParticleData is read at construction)
        probe = pythia8mc.Pythia("", False)
        pd = probe.particleData
        ids, i = ([1] if pd.isParticle(1) else []), 1  # nextId(0) returns 0
        while True:
            i = pd.nextId(i)
            if i <= 0 or (ids and i <= ids[-1]):
                break
            ids.append(i)
        q = model.quark
        heavy = [x for x in ids if is_heavy_flavour(x, q)]
        handled = sorted({s * x for x in heavy for s in (1, -1) if pd.isParticle(s * x)} | {int(p) for p in model.head_pids})
        self.signal_ids = {int(p) for p in model.head_pids}
        self.recorder = make_signal_recorder(self.signal_ids)
        cmds = list(commands) + ["HadronLevel:all = off"]
        self.pythia = configure_pythia(cmds, sqrt_s_gev, quiet=quiet, decay_handler=self.recorder, handled_ids=handled)
        self.reader_hooks = make_batch_hooks()
        self.reader = configure_pythia(["ProcessLevel:all = off", "PartonLevel:all = off",
                                        "HadronLevel:all = off", "Check:event = off"], sqrt_s_gev, quiet=quiet,
                                       hooks=self.reader_hooks)
        py = self.pythia
        pd = py.particleData
        settings = py.settings
        if not settings.flag("HadronLevel:Decay"):
            raise ConfigurationError("signal production needs Pythia decays: 'HadronLevel:Decay = off' is not supported")
        for flag in ("ParticleDecays:limitTau", "ParticleDecays:limitRadius", "ParticleDecays:limitCylinder"):
            if settings.flag(flag):
                raise ConfigurationError(f"'{flag} = on' is not supported with signal production "
                                         "(heavy-flavour hadrons must always decay); use ParticleDecays:limitTau0")
        tau0_max = settings.parm("ParticleDecays:tau0Max") if settings.flag("ParticleDecays:limitTau0") else math.inf
        for pid in sorted(self.signal_ids):
            if not pd.isParticle(pid):
                raise ConfigurationError(f"Pythia does not know the signal hadron {pid}")
            if not pd.mayDecay(pid) or not pd.canDecay(pid) or pd.tau0(pid) > tau0_max:
                raise ConfigurationError(f"the signal hadron {pd.name(pid)} ({pid}) does not decay in Pythia "
                                         "with these Commands (mayDecay off or tau0 above ParticleDecays:tau0Max)")
        heavy_set = {abs(x) for x in heavy}
        # species that decay normally but not during the trial hadronisations
        self.trial_off = [x for x in ids if pd.mayDecay(x) and not pd.isResonance(x) and x not in heavy_set]
        self._trial = False
        self.set_trial_mode(True)

    def set_trial_mode(self, on: bool):
        """Trial mode: only heavy-flavour hadrons decay (fast re-hadronisations)."""
        if on == self._trial:
            return
        pd = self.pythia.particleData
        for x in self.trial_off:
            pd.mayDecay(x, not on)
        self._trial = on

    def produce(self, seed: int, event_number: int, key_decay, key_choice) -> SignalOutcome:
        """One signal interaction for flashsim event ``event_number`` (Pythia seeded with ``seed``;
        counter-based keys for the phase-space decays and the candidate choice)."""
        import pythia8mc

        py, rec, model = self.pythia, self.recorder, self.model
        n_parton = n_had = n_quark = n_sig = n_cand = n_pass = n_fail = 0
        t_py = 0.0
        self.set_trial_mode(True)
        t0 = time.perf_counter()
        py.rndm.init(int(seed))
        t_py += time.perf_counter() - t0
        while True:
            n_parton += 1
            if n_parton > self.max_parton_events:
                raise RuntimeError(f"no signal after {self.max_parton_events} parton-level events in event "
                                   f"{event_number} (MaxPartonEvents)")
            t0 = time.perf_counter()
            ok = py.next()
            saved = pythia8mc.Event(py.event) if ok else None
            t_py += time.perf_counter() - t0
            if not ok:
                n_fail += 1
                continue
            for h in range(self.max_hadronisations):
                trial = n_had
                n_had += 1
                rec.reset()
                t0 = time.perf_counter()
                if h > 0:
                    py.event = saved
                ok = py.forceHadronLevel(False)
                t_py += time.perf_counter() - t0
                if not ok:
                    n_fail += 1
                    break
                if rec.n_calls == 0:  # no heavy-flavour hadron: no signal quark at parton level
                    break
                if h == 0:
                    n_quark += 1
                if not rec.candidates:
                    continue  # re-hadronise the same parton-level event
                n_sig += 1
                cands = np.array(rec.candidates, dtype=np.float64)
                index = cands[:, 0].astype(np.int64)
                ids = cands[:, 1].astype(np.int64)
                alt = np.array([model.alternative(x) for x in ids], dtype=np.int64)
                decayed = model.decay(key_decay, event_number, trial, alt, cands[:, 2:6] * GEV, cands[:, 6] * GEV)
                passed = model.passes(decayed)
                n_cand += len(passed)
                n_pass += int(passed.sum())
                if not passed.any():
                    break  # as Gauss: the parton-level event is not re-hadronised after the cut
                good = np.flatnonzero(passed)
                u = counter_uniform(np.uint64(key_choice), np.int64(event_number), np.int64(trial), np.int64(0))
                j = int(good[min(int(u * good.size), good.size - 1)])
                head = int(index[j])
                t0 = time.perf_counter()
                ev = py.event
                undone = ev[head].undoDecay()
                t_py += time.perf_counter() - t0
                if not undone:
                    n_fail += 1
                    break
                tree = model.trees[int(alt[j])]
                append_signal_decay(ev, head, tree, *(a[j] for a in decayed[1:]))
                self.set_trial_mode(False)
                try:
                    t0 = time.perf_counter()
                    ok = py.forceHadronLevel(False)
                    final = pythia8mc.Event(py.event) if ok else None
                    t_py += time.perf_counter() - t0
                finally:
                    self.set_trial_mode(True)
                if not ok:
                    n_fail += 1
                    break
                return SignalOutcome(final, head, int(alt[j]), n_parton, n_had, n_quark, n_sig, n_cand, n_pass,
                                     n_fail, t_py)

    def read(self, events) -> tuple[np.ndarray, dict]:
        """Columnar read of Pythia ``events`` (one ``nextBatch`` of the reader instance)."""
        n = len(events)
        if n == 0:
            return concat_batch_arrays([])
        self.reader_hooks.events, self.reader_hooks.pos = list(events), 0
        try:
            batch = self.reader.nextBatch(n)
        finally:
            self.reader_hooks.events = None
        if len(batch) != n or self.reader_hooks.pos != n:
            raise RuntimeError(f"Pythia8 reader returned {len(batch)} of {n} signal events")
        return batch_arrays(batch)


class Pythia8SignalGenerator(Pythia8Generator):
    """Pythia 8 signal production as LHCb's generation phase: repeated hadronisation of minimum-bias
    parton-level events until a signal hadron appears, generator-level cut, one chosen candidate
    decayed in the requested channel (phase space), everything else generic; pile-up.

    The signal interaction is collision 0 of each crossing (``Commands``); the pile-up collisions
    (Poisson from the Conditions) are minimum bias (``PileUpCommands``).  ``is_signal`` marks the
    chosen signal hadron, ``Gen/Header.signal_trials`` the number of hadronisations; counters
    record the parton-level events per signal event and the generator-level cut efficiency.
    """

    Descriptor = Property(str, "", "signal decay descriptor, e.g. '[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc'")
    GeneratorCut = Property(str, "DaughtersInLHCb", "generator-level cut on the signal candidates: "
                            + ", ".join(SIGNAL_CUTS), choices=list(SIGNAL_CUTS))
    CutEtaRange = Property(list, [2.0, 5.0], "ChargedDaughtersInEta / SignalInEta: eta range", item_type=(int, float))
    ChargedThetaRange = Property(list, [10.0, 400.0], "DaughtersInLHCb: polar angle range of stable charged "
                                                      "daughters [mrad]", item_type=(int, float))
    NeutralThetaRange = Property(list, [5.0, 400.0], "DaughtersInLHCb: polar angle range of stable neutral "
                                                     "daughters (neutrinos exempt) [mrad]", item_type=(int, float))
    SignalThetaMax = Property(float, 400.0, "SignalInLHCb: maximum polar angle of the signal hadron [mrad]")
    BreitWignerCutoff = Property(float, 5.0, "resonance masses generated within m0 +- k*Gamma (k)")
    MaxHadronisations = Property(int, 500, "maximum re-hadronisations of one parton-level event (Gauss: 500)")
    MaxPartonEvents = Property(int, 1_000_000, "maximum parton-level events per signal event before failing")
    PileUpCommands = Property(list, None, "Pythia settings of the pile-up collisions (default: Commands)", item_type=str)

    Header = Output("/Event/Gen/Header", "one row per event: n_collisions, ntracks_override (-1), "
                                         "signal_trials (hadronisations of the signal interaction)")

    def _pileup_commands(self):
        return list(self.PileUpCommands) if self.PileUpCommands is not None else list(self.Commands)

    def initialize(self):
        if not self.Descriptor:
            raise ConfigurationError(f"{self.name}.Descriptor must be set (e.g. '[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc')")
        try:
            self._model = SignalDecayModel(
                self.Descriptor, cut=self.GeneratorCut, cut_eta_range=self._pair("CutEtaRange"),
                charged_theta_mrad=self._pair("ChargedThetaRange"), neutral_theta_mrad=self._pair("NeutralThetaRange"),
                signal_theta_max_mrad=self.SignalThetaMax, bw_cutoff=self.BreitWignerCutoff)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{self.name}: {exc}") from None
        super().initialize()
        t0 = time.perf_counter()
        self._producer = PythiaSignalProducer(self.Commands, self._sqrt_s, self._model,
                                              self.MaxHadronisations, self.MaxPartonEvents, quiet=self._quiet)
        self.info(f"signal {self._model.descriptor} (quark {self._model.quark}), cut {self.GeneratorCut}, "
                  f"signal instance {list(self.Commands)} initialised in {time.perf_counter() - t0:.1f} s")

    def _pair(self, name):
        v = getattr(self, name)
        if v is None or len(v) != 2:
            raise ConfigurationError(f"{self.name}.{name} must be [min, max], got {v!r}")
        return [float(x) for x in v]

    def execute(self, ctx):
        t_start = time.perf_counter()
        events = np.asarray(ctx.event_numbers, dtype=np.int64)
        n = events.size
        seeds, ncoll, pv = self.draw_event_setup(ctx)
        sig_seeds = pythia_seeds_from_uniform(ctx.random.uniform(events, 0, stream=STREAM_SIGNAL_SEED))
        key_decay = ctx.random.key_for(STREAM_DECAY)
        key_choice = ctx.random.key_for(STREAM_CHOICE)
        outcomes = [self._producer.produce(int(sig_seeds[j]), int(events[j]), key_decay, key_choice)
                    for j in range(n)]
        t_py = sum(o.pythia_seconds for o in outcomes)
        t0 = time.perf_counter()
        sig_off, sig_cols = self._producer.read([o.event for o in outcomes])
        pu_off, pu_cols = generate_batch(self._pythia, self._hooks, seeds, ncoll - 1)
        t_py += time.perf_counter() - t0
        sig_sizes, sig_flat = strip_system(sig_off, sig_cols)
        pu_sizes, pu_flat = strip_system(pu_off, pu_cols)
        # collision order: event j -> its signal interaction, then its pile-up collisions
        order = np.zeros((int(ncoll.sum()), 2), dtype=np.int64)
        first = np.cumsum(ncoll) - ncoll
        order[first, 0] = 0
        order[first, 1] = np.arange(n)
        is_pu = np.ones(order.shape[0], dtype=bool)
        is_pu[first] = False
        order[is_pu, 0] = 1
        order[is_pu, 1] = np.arange(int(is_pu.sum()))
        sizes, flat = gather_collisions([(sig_sizes, sig_flat), (pu_sizes, pu_flat)], order)
        cstart = np.cumsum(sizes) - sizes
        heads = np.array([o.head for o in outcomes], dtype=np.int64)
        signal_rows = cstart[first] + heads - 1  # Pythia entry i -> row i-1 (system entry dropped)
        trials = np.array([o.hadronisations for o in outcomes], dtype=np.int64)
        out = truth_collections(sizes, flat, pv, ncoll, events, signal_rows=signal_rows, signal_trials=trials)
        self.pythia_seconds += t_py
        self.total_seconds += time.perf_counter() - t_start
        # counters
        self.counter("collisions").increment(int(ncoll.sum()))
        self.averaging_counter("collisions per event").add(ncoll)
        self.averaging_counter("MC particles per event").add(out["Particles"].counts)
        self.averaging_counter("parton-level events per signal event").add([o.parton_events for o in outcomes])
        self.averaging_counter("hadronisations per signal event").add(trials)
        q = "b" if self._model.quark == 5 else "c"
        parton_total = sum(o.parton_events for o in outcomes)
        self.binomial_counter(f"parton-level events with {q} hadrons").add_counts(
            sum(o.quark_events for o in outcomes), parton_total)
        self.binomial_counter("generator-level cut (interactions)").add_counts(
            n, sum(o.signal_interactions for o in outcomes))
        self.binomial_counter("generator-level cut (candidates)").add_counts(
            sum(o.candidates_passed for o in outcomes), sum(o.candidates for o in outcomes))
        fails = sum(o.failures for o in outcomes)
        if fails:
            self.counter("Pythia failures (parton event abandoned)").increment(fails)
        return out
