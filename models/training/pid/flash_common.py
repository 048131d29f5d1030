"""Training helpers of the flash PID models (PyTorch, CPU; training only -- never imported at run time).

* :func:`load_sample` -- a ROOT file of teacher samples (tree ``TeacherPID``) or of PIDCalib-style
  calibration samples (branch map, optional per-row sWeights, negative weights allowed).
* :class:`TieGaussianizer` -- weighted marginal quantile transform to N(0,1) that keeps point masses
  exact (tied quantile knots are not perturbed; training values in a tie are dequantised over the
  tie's Gaussian interval, uniformly in z or, ``tie_dequantisation="gaussian"``, in the CDF).
* :func:`find_muon_curves`, :class:`CurveTables`, :func:`build_curve_muon_model` -- the MUON model on
  curves: the (MuonMuLL, MuonBkgLL) curves found in the samples, a categorical curve and a conditional
  histogram along it (noise: two N(0,1) inputs turned into uniforms inside the graph).
* torch modules exported to ONNX (all preprocessing inside the graph):
  ``ClassifierNet`` (6 joint classes), :func:`build_pid_flow` (a conditional normalising flow with
  the design of ``models.training.tracking.generative``, own copy with a tie-preserving table) and
  ``GlobalPIDNet`` (heteroscedastic Gaussian density with a linear skip on the masked sub-detector
  DLLs; ProbNN outputs through a sigmoid).
* :func:`recalibrate_flow_onnx` -- post-training recalibration of an exported flow's quantile tables per
  (momentum, eta) group on the flow's own latent marginals (ONNX graph surgery: also for shipped models).
* :func:`train_weighted` -- AdamW on a weighted per-row loss (weights may be negative), cosine
  learning-rate schedule over a wall-time budget, best validation loss kept.
"""
from __future__ import annotations

import json
import math
import time

import numpy as np

from algorithms.pid.features import (
    GLOBALPID_OUTPUTS, SPECIES, SPECIES_ABSPDG, encode_classes, globalpid_features, kinematic_features,
    species_index,
)

TEACHER_TREE = "TeacherPID"
#: teacher-sample branch of every logical column (identity); PIDCalib-style files pass --branches
DEFAULT_BRANCHES = {c: c for c in (
    "p", "eta", "nTracks", "charge", "pid", "RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp", "hasRich", "isMuon",
    "InMuonAcc", "MuonMuLL", "MuonBkgLL", "PIDe", "PIDmu", "PIDK", "PIDp", "ProbNNe", "ProbNNmu", "ProbNNpi",
    "ProbNNk", "ProbNNp", "ProbNNghost")}
#: ProbNN clip and logit range of the GlobalPID targets: the teacher's ProbNN reach 1e-8 (a muon's
#: ProbNNp: median 6e-7), so a clip at 1e-7 / logit +-12 turned half of them into a point mass
#: at 6e-6 (KS 0.69); float32 sigmoid resolves down to ~1e-11
PROB_EPS = 1e-11
LOGIT_MAX = 25.0
#: combined DLLs of the GlobalPID model (order of its DLL head), its probability outputs (the first
#: five form one softmax when the training ProbNN sum to 1) and the muon states of its tables
DLL_OUTPUTS = ("PIDe", "PIDK", "PIDp", "PIDmu")
PROB_OUTPUTS = ("ProbNNe", "ProbNNpi", "ProbNNk", "ProbNNp", "ProbNNmu", "ProbNNghost")
MUON_STATES = ("out_of_acceptance", "in_acceptance_not_isMuon", "isMuon")


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def load_sample(path, tree=TEACHER_TREE, branches=None, weight_branch=None, species=None, max_rows=None) -> dict:
    """Logical columns of a teacher or calibration file.

    ``branches``: {logical name: branch name} overriding DEFAULT_BRANCHES (PIDCalib names such as
    ``p=probe_P``); ``species``: a species name for single-species calibration files (then no
    ``pid`` branch is needed); ``weight_branch``: per-row weight (sWeights, may be negative).
    Returns a dict with every logical column present, ``weight`` (float64) and ``species``
    (0..4, -1 for others).
    """
    import uproot

    bmap = dict(DEFAULT_BRANCHES)
    bmap.update(branches or {})
    with uproot.open(str(path)) as f:
        t = f[tree]
        have = set(t.keys())
        want = {k: b for k, b in bmap.items() if b in have}
        extra = [weight_branch] if weight_branch else []
        missing = [b for b in extra if b not in have]
        if missing:
            raise SystemExit(f"{path}:{tree}: weight branch {missing[0]!r} not found (branches: {sorted(have)[:20]} ...)")
        arr = t.arrays(list(set(want.values()) | set(extra)), library="np", entry_stop=max_rows)
    d = {k: np.asarray(arr[b]) for k, b in want.items()}
    n = len(next(iter(d.values())))
    d["weight"] = np.asarray(arr[weight_branch], dtype=np.float64) if weight_branch else np.ones(n)
    if species is not None:
        d["species"] = np.full(n, SPECIES.index(species), dtype=np.int8)
        if "pid" not in d:
            d["pid"] = np.full(n, SPECIES_ABSPDG[SPECIES.index(species)], dtype=np.int32)
    else:
        if "pid" not in d:
            raise SystemExit(f"{path}: no species branch {bmap['pid']!r}; pass --species for single-species files")
        d["species"] = species_index(d["pid"])
    need = ("p", "eta", "nTracks", "charge", "RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp", "hasRich", "isMuon",
            "InMuonAcc", "MuonMuLL", "MuonBkgLL") + tuple(c for c, _, _ in GLOBALPID_OUTPUTS)
    absent = [c for c in need if c not in d]
    if "ProbNNghost" in absent:   # calibration files rarely carry it: 0 (no ghosts among probes)
        d["ProbNNghost"] = np.zeros(n, np.float32)
        absent.remove("ProbNNghost")
    if absent:
        raise SystemExit(f"{path}: columns {absent} missing (map them with --branches name=branch,...)")
    for c in ("hasRich", "isMuon", "InMuonAcc"):
        d[c] = np.asarray(d[c]).astype(bool)
    return d


def split_indices(n: int, seed: int = 20160607, validation_fraction: float = 0.2):
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * validation_fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def columns_for(d: dict, rows) -> dict:
    """Model inputs/targets of ``rows``, built with the runtime feature functions."""
    kin = kinematic_features(d["p"][rows], d["eta"][rows], d["nTracks"][rows], d["charge"][rows])
    rich = np.stack([d[c][rows] for c in ("RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp")], 1).astype(np.float32)
    muon = np.stack([d[c][rows] for c in ("MuonMuLL", "MuonBkgLL")], 1).astype(np.float32)
    has, ism, acc = d["hasRich"][rows], d["isMuon"][rows], d["InMuonAcc"][rows]
    g = globalpid_features(kin, rich, ism, muon, has, acc)
    gt = np.stack([d[c][rows] for c, _, _ in GLOBALPID_OUTPUTS], 1).astype(np.float64)
    return {"kin": kin, "rich": rich, "muon": muon, "hasRich": has, "isMuon": ism, "InMuonAcc": acc,
            "classes": encode_classes(has, acc, ism), "gx": g, "gy": gt, "w": d["weight"][rows]}


def _teacher_chunks(species: str, n_rows: int, first0: int, seed: int, chunk: int, who: str, probnn=False):
    """``n_rows`` fresh teacher tracks of ``species`` (the training spectrum), row numbers from ``first0`` on,
    in chunks: yields the (tracks, teacher outputs) of make_teacher_samples.make_chunk."""
    from algorithms.pid.teacher.sampling import SPECIES_PDG
    from framework.random import RandomStreams
    from models.training.pid.make_teacher_samples import SPECIES as WRITER_SPECIES, make_chunk

    if species not in WRITER_SPECIES or species not in SPECIES_PDG:
        raise ValueError(f"{who}: unknown species {species!r}; expected one of {WRITER_SPECIES}")
    key = RandomStreams(seed, 0, "PIDTeacher").key_for(0)
    fr = np.array([1.0 if x == species else 0.0 for x in WRITER_SPECIES])
    for first in range(0, n_rows, chunk):
        yield make_chunk(first0 + first, min(chunk, n_rows - first), fr, seed, key, probnn)


def _teacher_rows(species: str, n_rows: int, flag: str, columns, first0: int, seed: int, chunk: int, who: str):
    """The rows with ``flag`` set among ``n_rows`` fresh teacher tracks of ``species`` (the training spectrum),
    row numbers from ``first0`` on: (kinematic features [n, 4], ``columns`` [n, len(columns)] as float32)."""
    kin, val = [], []
    for smp, out in _teacher_chunks(species, n_rows, first0, seed, chunk, who):
        m = np.asarray(out[flag], bool)
        kin.append(kinematic_features(smp["p"][m], smp["eta"][m], smp["nTracks"][m], smp["charge"][m]))
        val.append(np.stack([np.asarray(out[c])[m] for c in columns], 1).astype(np.float32))
    return np.concatenate(kin), np.concatenate(val)


def _species_offset(species: str) -> int:
    from models.training.pid.make_teacher_samples import SPECIES as WRITER_SPECIES

    return WRITER_SPECIES.index(species) * 10**10 if species in WRITER_SPECIES else 0


MUON_EXTRA_ROWS_BASE = 2 * 10**12
RICH_EXTRA_ROWS_BASE = 4 * 10**12


def teacher_muon_rows(species: str, n_rows: int, seed: int = 20240607, chunk: int = 200_000) -> dict:
    """Extra *isMuon* rows of one species from the teacher, for the MUON flow of species with a low
    isMuon rate (hadrons, electrons: 1-3 % of the main sample).  ``n_rows`` fresh teacher tracks of
    the species (the training spectrum) are simulated and only the isMuon rows kept.  Row numbers
    start at 2e12 + species * 1e10, so they never overlap the training/validation samples (row 0 on),
    the teacher ProbNN fit (1e12) or the tests (< 1e10).  The conditional density of the muon
    likelihoods given (p, eta, nTracks, charge) is the same as in the main sample.  Returns
    ``{"kin": [n, 4], "muon": [n, 2], "w": ones, "simulated": n_rows}``."""
    kin, muon = _teacher_rows(species, n_rows, "isMuon", ("MuonMuLL", "MuonBkgLL"),
                              MUON_EXTRA_ROWS_BASE + _species_offset(species), seed, chunk, "teacher_muon_rows")
    return {"kin": kin, "muon": muon, "w": np.ones(kin.shape[0]), "simulated": int(n_rows)}


def teacher_rich_rows(species: str, n_rows: int, seed: int = 20240607, chunk: int = 200_000,
                      first_row: int | None = None) -> dict:
    """Extra *hasRich* rows of one species from the teacher, for the RICH flow (``--rich-extra-tracks``):
    the main sample holds only 150k training rows per species, and the K and p flows overfit them.
    ``n_rows`` fresh teacher tracks of the species (the training spectrum) are simulated and the
    hasRich rows kept (~99 %).  Row numbers start at 4e12 + species * 1e10 (``first_row`` overrides, for
    tests), disjoint from the training/validation samples (row 0 on), the teacher ProbNN fit (1e12), the
    muon-enriched rows (2e12), the fresh MUON check rows (3e12) and the tests (< 1e10).  The conditional
    density of the RICH DLLs given (p, eta, nTracks, charge) is the same as in the main sample.  Returns
    ``{"kin": [n, 4], "rich": [n, 4], "isMuon": [n] bool, "w": ones, "simulated": n_rows, "first_row": ...}``."""
    first0 = RICH_EXTRA_ROWS_BASE + _species_offset(species) if first_row is None else int(first_row)
    kin, val = _teacher_rows(species, n_rows, "hasRich", ("RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp", "isMuon"),
                             first0, seed, chunk, "teacher_rich_rows")
    return {"kin": kin, "rich": np.ascontiguousarray(val[:, :4]), "isMuon": val[:, 4] > 0.5, "w": np.ones(kin.shape[0]),
            "simulated": int(n_rows), "first_row": int(first0)}


GLOBAL_EXTRA_ROWS_BASE = 5 * 10**12


#: first row of the classifier's extra rows (--ismuon-extra-tracks: teacher_global_rows(base=...))
ISMUON_EXTRA_ROWS_BASE = 6 * 10**12
#: start of the row numbers of the fresh teacher tracks whose no-RICH rows train the GlobalPID model's no-RICH head
#: (``--global-norich-tracks``): 7e12 + species * 1e10
NORICH_EXTRA_ROWS_BASE = 7 * 10**12


def teacher_global_rows(species: str, n_rows: int, seed: int = 20240607, chunk: int = 200_000,
                        first_row: int | None = None, base: int = GLOBAL_EXTRA_ROWS_BASE) -> dict:
    """Extra training rows of one species for the GlobalPID model (``--global-extra-tracks``): ``n_rows``
    fresh teacher tracks of the species (the training spectrum), all of them, with the teacher's ProbNN
    (``ProbNN.default()``, as in the sample).  The rare ProbNN cuts (mis-ID rates of 0.2-2 %) leave a
    few hundred rows above the cut among the sample's 150k training rows per species, too few to pin
    down the boundary of a deterministic function.  Row numbers start at 5e12 + species * 1e10
    (``first_row`` overrides, for tests), disjoint from the sample (row 0 on), the ProbNN fit (1e12),
    the muon-enriched rows (2e12), the fresh MUON check rows (3e12), the RICH extra rows (4e12) and
    the tests (< 1e10).  ``base``: the start of the range (the classifier's extra rows for
    ``--ismuon-extra-tracks`` use ISMUON_EXTRA_ROWS_BASE = 6e12 + species * 1e10).  Returns the
    :func:`columns_for` dict of these rows (unit weights) plus ``simulated`` and ``first_row``."""
    from algorithms.pid.teacher.probnn import ProbNN
    from models.training.pid.make_teacher_samples import to_branches

    if n_rows <= 0:
        raise ValueError(f"teacher_global_rows: n_rows must be positive, got {n_rows}")
    first0 = int(base) + _species_offset(species) if first_row is None else int(first_row)
    parts = []
    for smp, out in _teacher_chunks(species, n_rows, first0, seed, chunk, "teacher_global_rows", ProbNN.default()):
        b = to_branches(smp, out)
        b["weight"] = np.ones(b["p"].shape[0])
        parts.append(columns_for(b, np.arange(b["p"].shape[0])))
    out = {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}
    return {**out, "simulated": int(n_rows), "first_row": int(first0)}


# ----------------------------------------------------------------------------------------------
# preprocessing
# ----------------------------------------------------------------------------------------------
def weighted_quantile(v, w, levels):
    """Quantiles of v with weights w (negative weights are clipped to 0 for the CDF)."""
    order = np.argsort(v, kind="mergesort")
    v, w = v[order], np.clip(w[order], 0.0, None)
    if w.sum() <= 0:
        w = np.ones_like(v)
    c = np.cumsum(w) - 0.5 * w
    c /= w.sum()
    return np.interp(levels, c, v)


class TieGaussianizer:
    """Marginal quantile transform to N(0,1) with exact point masses (see module docstring)."""

    def __init__(self, n_knots: int = 241, g_max: float = 5.0, tie_dequantisation: str = "uniform"):
        self.g = np.linspace(-g_max, g_max, n_knots)
        self.q = None
        if tie_dequantisation not in ("uniform", "gaussian"):
            raise ValueError(f"tie_dequantisation: 'uniform' or 'gaussian', not {tie_dequantisation!r}")
        #: "uniform": uniform in z over the tie's Gaussian interval (a flat block with sharp edges in the
        #: marginal); "gaussian": uniform in the tie's CDF interval, z = Phi^-1(u) (the marginal stays N(0,1))
        self.tie_dequantisation = tie_dequantisation

    def fit(self, t, w=None):
        from scipy.special import ndtr

        t = np.asarray(t, dtype=np.float64)
        w = np.ones(t.shape[0]) if w is None else np.asarray(w, np.float64)
        levels = ndtr(self.g)
        q = np.stack([weighted_quantile(t[:, i], w, levels) for i in range(t.shape[1])])
        # knots of the same point mass are made *exactly* equal (the value itself), so that the
        # inverse reproduces it bit for bit; other knots stay strictly increasing
        for i in range(q.shape[0]):
            vals, counts = np.unique(t[:, i], return_counts=True)
            heavy = vals[counts > 0.002 * t.shape[0]]
            for v in heavy:
                close = np.abs(q[i] - v) <= 1e-6 * max(1.0, abs(v))
                q[i, close] = v
            q[i] = np.maximum.accumulate(q[i])
        self.q = q.astype(np.float32).astype(np.float64)
        return self

    def forward(self, t, rng):
        """Data -> Gaussian; values inside a tie get a uniform position in the tie's interval."""
        t = np.asarray(t, dtype=np.float64)
        u = np.empty_like(t)
        for i in range(t.shape[1]):
            q = self.q[i]
            lo = np.searchsorted(q, t[:, i], side="left")
            hi = np.searchsorted(q, t[:, i], side="right")
            base = np.interp(t[:, i], q, self.g)
            tie = (hi - lo) >= 2
            if tie.any():
                a = self.g[lo[tie]]
                b = self.g[hi[tie] - 1]
                r = rng.random(int(tie.sum()))
                if self.tie_dequantisation == "gaussian":
                    from scipy.special import ndtr, ndtri

                    fa, fb = ndtr(a), ndtr(b)
                    base[tie] = np.clip(ndtri(fa + (fb - fa) * r), a, b)
                else:
                    base[tie] = a + (b - a) * r
            u[:, i] = base
        return np.clip(u, self.g[0], self.g[-1])


def kin_transform_np(kin):
    """(log(p/GeV), eta, log(1 + nTracks), charge): the graph's first step, numpy version."""
    kin = np.asarray(kin, np.float64)
    return np.stack([np.log(np.maximum(kin[:, 0], 1.0) / 1000.0), kin[:, 1], np.log1p(np.maximum(kin[:, 2], 0.0)),
                     kin[:, 3]], axis=1)


def make_modules():
    """torch module classes (defined lazily so that importing this file does not need torch)."""
    import torch
    from torch import nn

    def kin_transform(x):
        p = torch.clamp(x[:, 0:1], min=1.0)
        nt = torch.clamp(x[:, 2:3], min=0.0)
        return torch.cat([torch.log(p / 1000.0), x[:, 1:2], torch.log(nt + 1.0), x[:, 3:4]], dim=1)

    def with_p_steps(z, x, steps):
        """The standardised features z, then +-1 for p > each step (steps [1, k] in MeV, or None; see
        ClassifierNet)."""
        return z if steps is None else torch.cat([z, 2.0 * (x[:, 0:1] > steps).to(z.dtype) - 1.0], dim=1)

    def p_steps_buffer(p_steps_gev):
        """The buffer of :func:`with_p_steps` (None without steps: earlier models' state is unchanged)."""
        if not len(p_steps_gev):
            return None
        return torch.as_tensor(np.asarray(p_steps_gev, np.float32).reshape(1, -1) * 1000.0)

    class Standardise(nn.Module):
        def __init__(self, loc, scale):
            super().__init__()
            self.register_buffer("loc", torch.as_tensor(np.asarray(loc, np.float32)))
            self.register_buffer("inv", torch.as_tensor(1.0 / np.asarray(scale, np.float32)))

        def forward(self, z):
            return (z - self.loc) * self.inv

    class ClassifierNet(nn.Module):
        """x (KIN_INPUTS) -> softmax over the 6 joint (hasRich, muon state) classes.

        ``p_steps_gev``: momenta (GeV) at which the classes may step (IsMuon's station requirements change at
        3, 6 and 10 GeV); each adds the input feature p > step (+-1), so that the MLP need not bend a smooth
        function of log p into a step.  ``loc``/``scale`` standardise the 4 transformed kinematic features."""

        def __init__(self, loc, scale, hidden=32, n_out=6, p_steps_gev=()):
            super().__init__()
            self.std = Standardise(loc, scale)
            self.register_buffer("p_steps", p_steps_buffer(p_steps_gev))
            n_in = 4 + len(p_steps_gev)
            self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                     nn.Linear(hidden, n_out))

        def logits(self, x):
            return self.net(with_p_steps(self.std(kin_transform(x)), x, self.p_steps))

        def forward(self, x):
            return torch.softmax(self.logits(x), dim=1)

    class GlobalPIDNet(nn.Module):
        """Combined DLLs and ProbNN of every long track; ``y = forward(x, noise)`` in GLOBALPID_OUTPUTS order.

        * Combined DLL (DLL_OUTPUTS) = sub-detector sum (RICH DLL if hasRich; for PIDmu also
          MuonMuLL - MuonBkgLL if isMuon) + a **per muon state** table in log p (out of acceptance /
          in acceptance not isMuon / isMuon; fitted before training, see :class:`GlobalPIDPrep`: the
          teacher's muon term of non-isMuon tracks is such a function, with steps at 3, 6, 10 GeV)
          + a Gaussian correction (mean, width, noise) that is switched on only for the (output,
          muon state) pairs whose residual is not identically 0 in training.
        * ProbNN: logits from one tanh layer (the form of LHCb's and the teacher's ProbNN) on the
          same features (sign*log1p|DLL| of the RICH DLLs, the muon DLL incl. the table term of
          non-isMuon tracks, the muon LLs, flags, kinematics, nTracks), plus width*noise.  If the
          training ProbNN e/pi/k/p/mu sum to 1 (the teacher: a softmax), they are the softmax of
          their 5 logits (the sum and every ratio are reproduced); otherwise each is a sigmoid of its
          own logit.  Loss: Gaussian likelihood of the (centred) log-probabilities -- a regression
          distillation whose width can go to ~0 for a deterministic teacher -- plus a soft
          cross-entropy."""

        def __init__(self, kin_loc, kin_scale, nt_loc, nt_scale, r_mean, r_std, gates, tables, tab_lo, tab_step,
                     const_mask, const_value, softmax=True, hidden=48, sigma_min=1e-3, logit_weight=2.0,
                     norich_hidden=0):
            super().__init__()
            self.logit_weight = float(logit_weight)
            self.softmax = bool(softmax)
            f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
            self.std = Standardise(kin_loc, kin_scale)
            names = [c for c, _, _ in GLOBALPID_OUTPUTS]
            d = len(names)
            self.d = d
            self.sigma_min = sigma_min
            self.register_buffer("nt_loc", f32([nt_loc]))
            self.register_buffer("nt_inv", f32([1.0 / nt_scale]))
            self.register_buffer("r_mean", f32(r_mean))          # [4] DLL_OUTPUTS
            self.register_buffer("r_std", f32(r_std))
            self.register_buffer("gates", f32(gates))            # [4, 3]
            tables = np.asarray(tables, np.float32)              # [4, 3, K]
            self.K = int(tables.shape[2])
            # only the (output, muon state) pairs with a non-zero table are evaluated (inference cost)
            pairs = [(j, c) for j in range(4) for c in range(3) if np.any(tables[j, c] != 0)]
            self.n_pairs = len(pairs)
            P = np.zeros((3, max(len(pairs), 1)), np.float32)   # state one-hot -> pair
            Q = np.zeros((max(len(pairs), 1), 4), np.float32)   # pair -> DLL output
            for k, (j, c) in enumerate(pairs):
                P[c, k] = 1.0
                Q[k, j] = 1.0
            self.register_buffer("tab_flat", f32(np.concatenate([tables[j, c] for j, c in pairs])
                                                 if pairs else np.zeros(2, np.float32)))
            self.register_buffer("tab_off", torch.arange(max(len(pairs), 1), dtype=torch.long) * self.K)
            self.register_buffer("pair_state", torch.as_tensor(P))
            self.register_buffer("pair_out", torch.as_tensor(Q))
            self.tab_lo = float(tab_lo)
            self.tab_inv = float(1.0 / tab_step)
            self.any_gate = bool(np.any(np.asarray(gates) > 0))
            self.register_buffer("const_mask", f32(const_mask))
            self.register_buffer("const_value", f32(const_value))
            self.any_const = bool(np.any(np.asarray(const_mask) > 0))
            # noise [N, d] (GLOBALPID_OUTPUTS order) -> [DLL_OUTPUTS | PROB_OUTPUTS] and back: one MatMul each
            order = [names.index(c) for c in DLL_OUTPUTS + PROB_OUTPUTS]
            sel = np.zeros((d, d), np.float32)
            for k, i in enumerate(order):
                sel[i, k] = 1.0
            self.register_buffer("sel", torch.as_tensor(sel))
            self.register_buffer("sel_T", torch.as_tensor(np.ascontiguousarray(sel.T)))
            self.dll_cols = [names.index(c) for c in DLL_OUTPUTS]
            self.prob_cols = [names.index(c) for c in PROB_OUTPUTS]
            pconst = np.asarray(const_mask, np.float32)[self.prob_cols]
            self.register_buffer("p_free", f32(1.0 - pconst))    # [6] prob outputs not constant
            self.trunk = nn.Linear(15, hidden)
            self.logit = nn.Linear(hidden, 6)
            self.branch = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 4 + 4 + 6))
            # no-RICH head: a correction of the ProbNN logits of tracks without RICH information, from its own
            # tanh layer (those tracks are ~2 % of the rows and their ProbNN a different, simple function of the
            # kinematics and the muon information; the shared layer fitted them to an rms of 0.02-0.13 in
            # probability).  Its last layer starts at 0: a model warm-started from one without the head is
            # unchanged until the head is trained, and the head never changes tracks with RICH information.
            self.norich_hidden = int(norich_hidden)
            if self.norich_hidden:
                self.norich = nn.Sequential(nn.Linear(15, self.norich_hidden), nn.Tanh(),
                                            nn.Linear(self.norich_hidden, 6))
                nn.init.zeros_(self.norich[2].weight)
                nn.init.zeros_(self.norich[2].bias)

        def features(self, x):
            has, ism, acc = x[:, 11:12], x[:, 8:9], x[:, 12:13]
            dll = x[:, 4:8] * has                               # RichDLLe, mu, K, p
            ll = x[:, 9:11] * ism
            mu_dll = ll[:, 0:1] - ll[:, 1:2]
            notm = 1.0 - ism
            onehot = torch.cat([(1.0 - acc) * notm, acc * notm, ism], dim=1)      # [N, 3] muon state
            if self.n_pairs:
                lp = torch.log(torch.clamp(x[:, 0:1], min=1.0) / 1000.0)
                pos = torch.clamp((lp - self.tab_lo) * self.tab_inv, 0.0, float(self.K - 1) - 1e-3)
                i0 = torch.floor(pos)
                frac = pos - i0
                idx = i0.to(torch.long) + self.tab_off                           # [N, pairs]
                lo = self.tab_flat[idx]
                hi = self.tab_flat[idx + 1]
                tab = ((lo + frac * (hi - lo)) * (onehot @ self.pair_state)) @ self.pair_out   # [N, 4]
            else:
                tab = torch.zeros_like(dll)
            structural = torch.cat([dll[:, 0:1], dll[:, 2:3], dll[:, 3:4], dll[:, 1:2] + mu_dll], dim=1) + tab
            mu_full = mu_dll + tab[:, 3:4]
            raw = torch.cat([dll, mu_full, ll], dim=1)
            slog = torch.sign(raw) * torch.log(torch.abs(raw) + 1.0)
            nt = (x[:, 2:3] - self.nt_loc) * self.nt_inv
            feats = torch.cat([self.std(kin_transform(x[:, 0:4])), nt, slog, has, ism, acc], dim=1)
            return feats, structural, onehot @ self.gates.T

        def head(self, x):
            feats, structural, gate = self.features(x)
            h = torch.tanh(self.trunk(feats))
            logits = self.logit(h)
            if self.norich_hidden:
                logits = logits + (1.0 - feats[:, -3:-2]) * self.norich(feats)
            b = self.branch(h)
            sp = torch.nn.functional.softplus
            d_sigma = self.sigma_min + sp(b[:, 4:8] - 3.0)
            l_sigma = self.sigma_min + sp(b[:, 8:14] - 3.0)
            return logits, l_sigma, b[:, 0:4], d_sigma, structural, gate

        def loss(self, x, r_std, p_target, l_target):
            """per-row loss.  r_std [N, 4]: standardised DLL corrections (after the tables);
            p_target [N, 6]: PROB_OUTPUTS; l_target [N, 6]: softmax mode: centred log-probabilities
            of the first 5 and the ghost logit, sigmoid mode: logits."""
            logits, l_sigma, d_mean, d_sigma, _, gate = self.head(x)
            z = (r_std - d_mean) / d_sigma
            nll_dll = ((0.5 * z * z + torch.log(d_sigma)) * gate).sum(dim=1)
            free = self.p_free
            if self.softmax:
                l5 = logits[:, :5]
                lc = torch.cat([l5 - l5.mean(dim=1, keepdim=True), logits[:, 5:6]], dim=1)
                ce5 = -(p_target[:, :5] * torch.log_softmax(l5, dim=1)).sum(dim=1) * free[:5].max()
                ceg = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits[:, 5], p_target[:, 5], reduction="none") * free[5]
                ce = ce5 + ceg
            else:
                lc = logits
                ce = (torch.nn.functional.binary_cross_entropy_with_logits(logits, p_target, reduction="none")
                      * free).sum(dim=1)
            zl = (l_target - lc) / l_sigma
            nll_logit = ((0.5 * zl * zl + torch.log(l_sigma)) * free).sum(dim=1)
            return nll_dll + 20.0 * ce + self.logit_weight * nll_logit

        def forward(self, x, noise):
            logits, l_sigma, d_mean, d_sigma, structural, gate = self.head(x)
            nz = noise @ self.sel                              # [N, 10]: DLL_OUTPUTS | PROB_OUTPUTS
            if self.any_gate:
                dll = structural + gate * ((d_mean + d_sigma * nz[:, :4]) * self.r_std + self.r_mean)
            else:
                dll = structural
            lz = logits + l_sigma * nz[:, 4:]
            if self.softmax:
                probs = torch.cat([torch.softmax(lz[:, :5], dim=1), torch.sigmoid(lz[:, 5:6])], dim=1)
            else:
                probs = torch.sigmoid(lz)
            y = torch.cat([dll, probs], dim=1) @ self.sel_T
            if self.any_const:
                y = self.const_mask * self.const_value + (1.0 - self.const_mask) * y
            return y

    return {"ClassifierNet": ClassifierNet, "GlobalPIDNet": GlobalPIDNet,
            "kin_transform": kin_transform, "with_p_steps": with_p_steps, "p_steps_buffer": p_steps_buffer}


class GlobalPIDPrep:
    """Numpy side of :class:`GlobalPIDNet` (fitted on the training rows, weights allowed):

    * ``state``: muon state 0 out of acceptance, 1 in acceptance not isMuon, 2 isMuon;
    * ``structural``: sub-detector sums of DLL_OUTPUTS (PIDe, PIDK, PIDp, PIDmu);
    * ``tables`` [4, 3, K]: per (output, muon state) a piecewise-linear function of log(p/GeV)
      on K uniform knots, the weighted least-squares fit (with a weak curvature penalty for empty
      knots) of the residual combined DLL - sub-detector sum; all-zero for pairs whose residual
      is identically 0 (the teacher's PIDe/K/p everywhere, PIDmu of isMuon tracks and out of
      acceptance), so those stay exact;
    * ``gates`` [4, 3]: 1 where a Gaussian correction is learned on top (residual after the table
      not identically 0);
    * ``softmax``: the 5 ProbNN (e, pi, k, p, mu) sum to 1 in training (the teacher's ProbNN is
      a softmax): the model uses one softmax, else independent sigmoids.
    """

    def __init__(self, n_knots: int = 512):
        self.n_knots = n_knots

    @staticmethod
    def split(gx):
        x = np.asarray(gx, np.float64)
        has, ism, acc = x[:, 11] > 0.5, x[:, 8] > 0.5, x[:, 12] > 0.5
        state = np.where(ism, 2, np.where(acc, 1, 0))
        dll = x[:, 4:8] * has[:, None]
        mu = (x[:, 9] - x[:, 10]) * ism
        structural = np.stack([dll[:, 0], dll[:, 2], dll[:, 3], dll[:, 1] + mu], axis=1)
        lp = np.log(np.maximum(x[:, 0], 1.0) / 1000.0)
        return state, structural, lp

    def fit(self, gx, gy, w):
        from scipy import sparse
        from scipy.sparse.linalg import spsolve

        names = [c for c, _, _ in GLOBALPID_OUTPUTS]
        y = np.asarray(gy, np.float64)
        w = np.clip(np.asarray(w, np.float64), 0.0, None) + 1e-12
        state, structural, lp = self.split(gx)
        resid = y[:, [names.index(c) for c in DLL_OUTPUTS]] - structural
        x = np.asarray(gx, np.float64)
        mag = 1.0 + np.abs(structural) + np.abs(y[:, [names.index(c) for c in DLL_OUTPUTS]])
        mag[:, 3] += (np.abs(x[:, 9]) + np.abs(x[:, 10])) * (state == 2)
        K = self.n_knots
        self.lo = float(lp.min()) - 1e-3
        self.step = float((lp.max() + 1e-3 - self.lo) / (K - 1))
        tables = np.zeros((4, 3, K))
        gates = np.zeros((4, 3))
        pos = np.clip((lp - self.lo) / self.step, 0.0, K - 1 - 1e-3)
        i0 = np.floor(pos).astype(np.int64)
        fr = pos - i0
        D = sparse.diags([np.ones(K - 2), -2 * np.ones(K - 2), np.ones(K - 2)], [0, 1, 2], shape=(K - 2, K))
        self.fit_rms = np.zeros((4, 3))
        for j in range(4):
            for c in range(3):
                m = state == c
                # identically 0 up to the float32 rounding of the stored columns
                if m.sum() == 0 or np.all(np.abs(resid[m, j]) <= 1e-5 * mag[m, j]):
                    continue
                rows = np.flatnonzero(m)
                A = sparse.csr_matrix((np.r_[1 - fr[rows], fr[rows]], (np.r_[np.arange(rows.size), np.arange(rows.size)],
                                                                       np.r_[i0[rows], i0[rows] + 1])), shape=(rows.size, K))
                W = sparse.diags(w[rows])
                AtA = (A.T @ W @ A).tocsc()
                lam = 1e-6 * float(w[rows].sum()) / K
                t = spsolve((AtA + lam * (D.T @ D) + 1e-12 * sparse.eye(K)).tocsc(), A.T @ (w[rows] * resid[rows, j]))
                tables[j, c] = t
                after = resid[rows, j] - (A @ t)
                self.fit_rms[j, c] = float(np.sqrt(np.average(after ** 2, weights=w[rows])))
                gates[j, c] = float(np.ptp(after) > 1e-4 * max(1.0, float(np.abs(resid[rows, j]).max())))
        self.tables = tables.astype(np.float32).astype(np.float64)
        self.gates = gates
        r = self.residual(gx, gy)
        g = self.gate_rows(gx)
        ww = w[:, None] * g
        sw = np.maximum(ww.sum(0), 1e-12)
        self.r_mean = (ww * r).sum(0) / sw
        self.r_std = np.sqrt((ww * (r - self.r_mean) ** 2).sum(0) / sw)
        self.r_std = np.where(self.r_std < 1e-6, 1.0, self.r_std)
        self.r_mean = np.where(gates.sum(1) > 0, self.r_mean, 0.0)
        probs = y[:, [names.index(c) for c in PROB_OUTPUTS[:5]]]
        ok = np.abs(probs.sum(1) - 1.0) < 1e-4
        self.softmax = bool(np.average(ok, weights=w) > 0.999 and np.all(probs >= 0))
        self.const_mask = np.array([n in PROB_OUTPUTS and np.ptp(y[:, i]) == 0 for i, n in enumerate(names)])
        self.const_value = np.where(self.const_mask, y[0], 0.0)
        return self

    def table_values(self, gx):
        state, _, lp = self.split(gx)
        K = self.n_knots
        pos = np.clip((lp - self.lo) / self.step, 0.0, K - 1 - 1e-3)
        i0 = np.floor(pos).astype(np.int64)
        fr = pos - i0
        flat = self.tables.reshape(4, 3 * K)
        idx = state * K + i0
        return ((1 - fr) * flat[:, idx] + fr * flat[:, idx + 1]).T

    def gate_rows(self, gx):
        state, _, _ = self.split(gx)
        return self.gates[:, state].T

    def residual(self, gx, gy):
        names = [c for c, _, _ in GLOBALPID_OUTPUTS]
        _, structural, _ = self.split(gx)
        y = np.asarray(gy, np.float64)[:, [names.index(c) for c in DLL_OUTPUTS]]
        return y - structural - self.table_values(gx)

    def targets(self, gx, gy):
        """(standardised DLL corrections [N, 4], ProbNN [N, 6], log-probability targets [N, 6])."""
        names = [c for c, _, _ in GLOBALPID_OUTPUTS]
        r = (self.residual(gx, gy) - self.r_mean) / self.r_std * self.gate_rows(gx)
        prob = np.clip(np.asarray(gy, np.float64)[:, [names.index(c) for c in PROB_OUTPUTS]], 0.0, 1.0)
        pc = np.clip(prob, PROB_EPS, 1 - PROB_EPS)
        logit = np.clip(np.log(pc) - np.log1p(-pc), -LOGIT_MAX, LOGIT_MAX)
        if self.softmax:
            lg = np.log(pc[:, :5])
            logit[:, :5] = lg - lg.mean(1, keepdims=True)
        return r, prob, logit

    def summary(self) -> dict:
        pairs = {}
        for j, c in enumerate(DLL_OUTPUTS):
            for k, st in enumerate(MUON_STATES):
                if np.any(self.tables[j, k] != 0) or self.gates[j, k]:
                    pairs[f"{c}|{st}"] = {"table": bool(np.any(self.tables[j, k] != 0)),
                                          "gaussian_correction": bool(self.gates[j, k]),
                                          "rms_after_table": round(float(self.fit_rms[j, k]), 5)}
        return {"probnn_head": "softmax of 5 logits (training ProbNN sum to 1)" if self.softmax else
                "independent sigmoids", "dll_terms_beyond_subdetector_sum": pairs or "none (exact sums)",
                "table_knots": int(self.n_knots), "table_log_p_GeV_range": [round(self.lo, 4),
                                                                           round(self.lo + self.step * (self.n_knots - 1), 4)]}


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
def train_weighted(model, row_loss, n_train, w_train, val_loss, *, seconds=60.0, max_epochs=200, batch=1024,
                   lr=3e-3, weight_decay=0.0, seed=0, threads=1, log=print, name="model", batch_max=None,
                   lbfgs_seconds=0.0, lbfgs_rows=60_000, device="cpu"):
    """Minimise sum_i w_i loss_i / sum_i w_i with AdamW over a wall-time budget.

    ``row_loss(idx)`` -> per-row loss tensor of the training rows ``idx`` (LongTensor); weights may
    be negative (sWeights): each batch is normalised by the *global* mean weight so that negative
    batches do not flip the sign.  ``val_loss()`` -> float (weighted validation loss); the best
    state is kept.  ``batch_max``: the batch grows from ``batch`` to ``batch_max`` in doublings
    spread evenly over the budget (less gradient noise late in training, and on one CPU thread
    a 4096-row step costs ~2x a 1024-row step, not 4x).  ``lbfgs_seconds``: after AdamW, a
    full-batch L-BFGS polish on ``lbfgs_rows`` training rows (useful for the near-deterministic
    GlobalPID distillation); kept only if the validation loss improves.  ``device``: the torch device of the
    model during training (``row_loss`` and ``val_loss`` must use tensors on it; the batches are the same
    permutations on any device); the model is moved back to the CPU at the end.
    """
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model.to(device)
    w = torch.as_tensor(np.asarray(w_train, np.float32), device=device)
    w_mean = float(np.mean(w_train)) if abs(float(np.mean(w_train))) > 1e-12 else 1.0
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    batch0 = batch
    n_double = int(round(math.log2(batch_max / batch0))) if batch_max and batch_max > batch0 else 0
    t0 = time.time()
    best, best_state, epoch = float("inf"), None, 0
    history = []
    while epoch < max_epochs and (time.time() - t0 < seconds or epoch == 0):
        frac0 = min((time.time() - t0) / seconds, 1.0)
        batch = batch0 * 2 ** min(int(frac0 * (n_double + 1)), n_double)
        steps = max(n_train // batch, 1)
        perm = torch.randperm(n_train, generator=gen)
        model.train()
        run = 0.0
        for k in range(steps):
            frac = min((time.time() - t0) / seconds, 1.0)
            for g in opt.param_groups:
                g["lr"] = lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
            idx = perm[k * batch:(k + 1) * batch].to(device)
            loss = (row_loss(idx) * w[idx]).mean() / w_mean
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            run += float(loss.detach())
        epoch += 1
        model.eval()
        with torch.no_grad():
            v = float(val_loss())
        history.append(v)
        if math.isfinite(v) and v < best:
            best = v
            best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        if log and (epoch % 5 == 1 or time.time() - t0 >= seconds):
            log(f"  [{name}] epoch {epoch:3d} train {run / steps:.4f} val {v:.4f} ({time.time() - t0:.0f}s)")
    if best_state is not None:
        model.load_state_dict(best_state)
    info = {"epochs": epoch, "seconds": round(time.time() - t0, 1), "best_val_loss": round(best, 5),
            "batch": [batch0, batch0 * 2 ** n_double] if n_double else batch0}
    if lbfgs_seconds > 0:
        t1 = time.time()
        sub = torch.randperm(n_train, generator=gen)[:lbfgs_rows].to(device)
        wsub = w[sub]
        wm = float(wsub.mean()) if abs(float(wsub.mean())) > 1e-12 else 1.0
        model.train()
        opt2 = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=20, history_size=20,
                                 line_search_fn="strong_wolfe")

        def closure():
            opt2.zero_grad(set_to_none=True)
            loss = (row_loss(sub) * wsub).mean() / wm
            loss.backward()
            return loss

        rounds = 0
        while time.time() - t1 < lbfgs_seconds:
            opt2.step(closure)
            rounds += 1
            model.eval()
            with torch.no_grad():
                v = float(val_loss())
            model.train()
            if math.isfinite(v) and v < best:
                best = v
                best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
            if log:
                log(f"  [{name}] L-BFGS round {rounds} val {v:.4f} ({time.time() - t1:.0f}s)")
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        info.update(lbfgs_rounds=rounds, lbfgs_seconds=round(time.time() - t1, 1), best_val_loss=round(best, 5),
                    lbfgs_rows=int(sub.numel()))
    model.to("cpu")
    model.eval()
    if str(device) != "cpu":
        from models.training import device_text

        info["device"] = device_text(device)
    return info


def export(model, path, n_in, noise_dim=0, opset=17):
    """ONNX export with inputs ``x`` (and ``noise``), output ``y``, dynamic batch axis."""
    import onnx
    import torch

    model.eval()
    x = torch.zeros(8, n_in) + torch.tensor([20000.0, 3.0, 100.0, 1.0] + [0.0] * (n_in - 4))
    args = (x,) if not noise_dim else (x, torch.zeros(8, noise_dim))
    names = ["x"] if not noise_dim else ["x", "noise"]
    axes = {k: {0: "N"} for k in names + ["y"]}
    with torch.no_grad():
        torch.onnx.export(model, args, str(path), input_names=names, output_names=["y"], dynamic_axes=axes,
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    onnx.checker.check_model(onnx.load(str(path)))
    return path


# ----------------------------------------------------------------------------------------------
# conditional normalising flow (design of models/training/tracking/generative.py, own copy: a
# single tie-preserving quantile table, kinematic transform and standardisation in front)
# ----------------------------------------------------------------------------------------------
#: the variables a RICH flow models, as linear maps of (DLLe, DLLmu, DLLK, DLLp): flow = dll @ A, dll = flow @ B
#: (A and B = A^-1 have entries 0 and +-1, |det| = 1, so likelihoods in either basis are comparable, and products by
#: 0 and 1 keep the point masses exact: DLLp - DLLK == 0 gives DLLp == DLLK bit for bit).  "dll" (the default, all
#: shipped models): (DLLe, DLLmu, DLLK, DLLp - DLLK).  "pdiff" (tried in issue 6's sixth round, not used):
#: (DLLe - DLLp, DLLmu - DLLp, DLLp - DLLK, DLLK).  Below a hadron's Cherenkov threshold its hypothesis predicts no
#: ring, so a difference to the proton (no-ring) hypothesis such as DLLe - DLLp sits on a narrow ridge (about -mu_e
#: for the tracks with no photon in the electron window); in the DLL basis that ridge is a thin oblique structure
#: the affine couplings spread out, in this basis a marginal feature the quantile tables reproduce.  But DLLe and
#: DLLmu are then small differences of large flow variables (DLLmu = (DLLmu - DLLp) + (DLLp - DLLK) + DLLK), and
#: a small error of the learned dependence becomes a large error of their marginals: on the kaon teacher sample
#: (same recipe, 2400 s) KS of DLLe / DLLmu 0.047 / 0.094 against 0.010 / 0.011 in the DLL basis, joint
#: two-sample AUC 0.753 against 0.557 (docs/pid_flash.md, sixth round).
RICH_BASES = {
    "dll": np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -1], [0, 0, 0, 1]], np.float64),
    "pdiff": np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 1], [-1, -1, 1, 0]], np.float64),
}
#: names of the RICH flow variables per basis, for the cards
RICH_FLOW_VARIABLES = {"dll": ("RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp - RichDLLK"),
                       "pdiff": ("RichDLLe - RichDLLp", "RichDLLmu - RichDLLp", "RichDLLp - RichDLLK", "RichDLLK")}
#: ONNX metadata key naming the basis of a RICH flow (absent: "dll", the models before the key existed)
BASIS_KEY = "flashsim_rich_basis"


def rich_basis_matrices(basis: str = "dll"):
    """(A, B) of a RICH basis: flow variables = DLLs @ A, DLLs = flow variables @ B."""
    if basis not in RICH_BASES:
        raise ValueError(f"unknown RICH flow basis {basis!r}; expected one of {sorted(RICH_BASES)}")
    A = RICH_BASES[basis]
    return A, np.rint(np.linalg.inv(A)) + 0.0


def rich_to_flow(rich, basis: str = "dll"):
    """RICH DLLs -> flow variables of ``basis`` (RICH_FLOW_VARIABLES); the inverse is in the graph."""
    return np.asarray(rich, np.float64) @ rich_basis_matrices(basis)[0]


def onnx_metadata(path) -> dict:
    """The metadata entries of an ONNX file."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _put_metadata(model, items):
    """Add or replace metadata entries of a loaded ONNX model (in memory)."""
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in items]
    del model.metadata_props[:]
    for k, v in keep + list(items.items()):
        e = model.metadata_props.add()
        e.key, e.value = k, str(v)


def onnx_rich_basis(path) -> str:
    """The RICH flow basis recorded in an exported model's metadata ("dll" when none is recorded)."""
    return onnx_metadata(path).get(BASIS_KEY, "dll")


def onnx_n_inputs(path) -> int:
    """Width of the input ``x`` of an exported model (e.g. 4 or 5 for a RICH flow)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    x = [i for i in m.graph.input if i.name == "x"][0]
    return int(x.type.tensor_type.shape.dim[1].dim_value)


def set_onnx_metadata(path, **items):
    """Add or replace metadata entries of an ONNX file (in place)."""
    import onnx

    model = onnx.load(str(path))
    _put_metadata(model, items)
    onnx.save(model, str(path))


def build_pid_flow(kin_loc, kin_scale, gauss: TieGaussianizer, dim: int, n_layers: int = 6, hidden: int = 32,
                   embed: int = 16, seed: int = 0, post=None, basis: str = "dll", n_flags: int = 0):
    """torch module with ``log_prob(u, x)`` (u: Gaussianised targets, x: KIN_INPUTS, then ``n_flags`` 0/1
    flag columns taken as they are, e.g. isMuon of RICH_INPUTS_WITH_ISMUON) and ``forward(x, noise)`` ->
    targets (the exported sampling graph).  ``freeze()`` before export."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    act = nn.SiLU
    half = dim // 2
    kin_transform = make_modules()["kin_transform"]
    B_rich = torch.as_tensor(rich_basis_matrices(basis)[1].astype(np.float32))

    class Coupling(nn.Module):
        """Affine coupling of one half given the other half and the condition embedding, followed
        (sampling direction) by a learned invertible mixing W = P L U."""

        def __init__(self, flip, perm):
            super().__init__()
            self.flip = flip
            na, nb = (dim - half, half) if not flip else (half, dim - half)
            self.na, self.nb = na, nb
            self.lin_a = nn.Linear(na, hidden)
            self.lin_e = nn.Linear(embed, hidden, bias=False)
            self.out = nn.Sequential(act(), nn.Linear(hidden, hidden), act(), nn.Linear(hidden, 2 * nb))
            nn.init.zeros_(self.out[-1].weight)
            nn.init.zeros_(self.out[-1].bias)
            self.register_buffer("P", torch.as_tensor(np.eye(dim, dtype=np.float32)[perm]))
            self.L = nn.Parameter(torch.zeros(dim, dim))
            self.U = nn.Parameter(torch.zeros(dim, dim))
            self.log_d = nn.Parameter(torch.zeros(dim))
            self.register_buffer("tril", torch.tril(torch.ones(dim, dim), -1))
            self.W_T = None

        def W(self):
            L = self.L * self.tril + torch.eye(dim)
            U = self.U * self.tril.T + torch.diag(torch.exp(self.log_d))
            return self.P @ L @ U

        def st(self, a, e):
            h = self.out(self.lin_a(a) + self.lin_e(e))
            return 3.0 * torch.tanh(h[:, : self.nb] / 3.0), h[:, self.nb:]

        def split(self, z):
            return (z[:, self.nb:], z[:, : self.nb]) if self.flip else (z[:, : self.na], z[:, self.na:])

        def join(self, a, b):
            return torch.cat([b, a], dim=1) if self.flip else torch.cat([a, b], dim=1)

        def sample(self, z, e):
            a, b = self.split(z)
            s, t = self.st(a, e)
            z = self.join(a, b * torch.exp(s) + t)
            return z @ (self.W_T if self.W_T is not None else self.W().T)

        def inverse(self, u, e):
            z = u @ torch.linalg.inv(self.W()).T
            a, b = self.split(z)
            s, t = self.st(a, e)
            return self.join(a, (b - t) * torch.exp(-s)), -s.sum(dim=1) - self.log_d.sum()

    rng = np.random.default_rng(seed + 1)
    specs = [(k % 2 == 1, rng.permutation(dim)) for k in range(n_layers)]
    f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731

    class Flow(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("c_loc", f32(kin_loc))
            self.register_buffer("c_inv", 1.0 / f32(kin_scale))
            self.embed = nn.Sequential(nn.Linear(4 + n_flags, hidden), act(), nn.Linear(hidden, embed), act())
            self.base = nn.Linear(embed, 2 * dim)
            nn.init.zeros_(self.base.weight)
            nn.init.zeros_(self.base.bias)
            self.layers = nn.ModuleList([Coupling(flip, perm) for flip, perm in specs])
            self.register_buffer("q_flat", f32(gauss.q.reshape(-1)))
            self.K = gauss.q.shape[1]
            self.g0 = float(gauss.g[0])
            self.inv_dg = float((self.K - 1) / (gauss.g[-1] - gauss.g[0]))
            self.register_buffer("col_off", torch.arange(dim, dtype=torch.long) * self.K)
            self.dim = dim

        def cond(self, x):
            c = (kin_transform(x[:, :4]) - self.c_loc) * self.c_inv
            return self.embed(torch.cat([c, x[:, 4:4 + n_flags]], dim=1) if n_flags else c)

        def base_st(self, e):
            h = self.base(e)
            return 3.0 * torch.tanh(h[:, : self.dim] / 3.0), h[:, self.dim:]

        def log_prob(self, u, x):
            e = self.cond(x)
            z, logdet = u, torch.zeros(u.shape[0], dtype=u.dtype)
            for layer in reversed(self.layers):
                z, ld = layer.inverse(z, e)
                logdet = logdet + ld
            s, t = self.base_st(e)
            z = (z - t) * torch.exp(-s)
            return -0.5 * (z * z).sum(dim=1) - 0.5 * self.dim * math.log(2 * math.pi) + logdet - s.sum(dim=1)

        def freeze(self):
            for layer in self.layers:
                layer.W_T = layer.W().detach().T.contiguous()

        def forward(self, x, noise):
            e = self.cond(x)
            s, t = self.base_st(e)
            z = noise * torch.exp(s) + t
            for layer in self.layers:
                z = layer.sample(z, e)
            # inverse marginal quantile transform (uniform Gaussian grid: arithmetic bin, Gather)
            pos = torch.clamp((z - self.g0) * self.inv_dg, 0.0, float(self.K - 1) - 1e-3)
            i0 = torch.floor(pos)
            frac = pos - i0
            idx = i0.to(torch.long) + self.col_off
            lo, hi = self.q_flat[idx], self.q_flat[idx + 1]
            t = lo + frac * (hi - lo)
            if post == "rich":   # flow variables of the basis -> (DLLe, DLLmu, DLLK, DLLp): one MatMul
                t = t @ B_rich
            return t

    return Flow()


# ----------------------------------------------------------------------------------------------
# MUON model on curves: the (MuonMuLL, MuonBkgLL) pairs of a muon system whose two likelihoods are
# functions of one distance per number of stations with hits lie on a few 1D curves, where a 2D
# flow cannot put its mass.  The curves are found in the training sample (no detector formula):
# each curve is taken to be a graph MuonBkgLL = g_c(s) over s = MuonMuLL - MuonBkgLL (checked on
# the data: the fraction of rows on a continuous curve is measured and written to the card).
# ----------------------------------------------------------------------------------------------
try:
    import numba as _nb
except ImportError:   # pragma: no cover - numba is a dependency of the runtime
    _nb = None


def _track_curves_py(s, b, lab, max_tracks, tol_abs, tol_rel, kappa, delta):
    """Walk the rows in increasing s; each row joins the curve whose linear extrapolation (slope from
    points at least ``delta`` apart, an allowance kappa*ds*(ds+span)/2 for curvature) is closest, or
    starts a new curve when every prediction is off by more than tol_abs + tol_rel*|b|."""
    n = s.shape[0]
    ls = np.empty(max_tracks); lb = np.empty(max_tracks)    # noqa: E702
    as_ = np.empty(max_tracks); ab = np.empty(max_tracks)   # noqa: E702
    sl = np.zeros(max_tracks); ns = np.zeros(max_tracks, np.int64)   # noqa: E702
    T = 0
    n_forced = 0
    for i in range(n):
        best = 1e300
        bc = -1
        for c in range(T):
            d = s[i] - ls[c]
            allow = 0.5 * kappa * d * (d + ls[c] - as_[c]) if ns[c] > 0 else kappa * d
            r = abs(b[i] - (lb[c] + sl[c] * d)) - allow
            if r < best:
                best = r
                bc = c
        if bc < 0 or best > tol_abs + tol_rel * abs(b[i]):
            if T < max_tracks:
                bc = T
                T += 1
                ls[bc] = s[i]; lb[bc] = b[i]; as_[bc] = s[i]; ab[bc] = b[i]; sl[bc] = 0.0; ns[bc] = 0   # noqa: E702
                lab[i] = bc
                continue
            n_forced += 1
        lab[i] = bc
        ls[bc] = s[i]
        lb[bc] = b[i]
        if s[i] - as_[bc] >= delta:
            sl[bc] = (b[i] - ab[bc]) / (s[i] - as_[bc])
            ns[bc] += 1
            as_[bc] = s[i]
            ab[bc] = b[i]
    return T, n_forced


_track_curves = _nb.njit(cache=True)(_track_curves_py) if _nb is not None else _track_curves_py


def find_muon_curves(mu_ll, bkg_ll, w=None, max_curves=12, tol_abs=1e-3, tol_rel=2e-3, kappa=1.0,
                     min_frac=0.002) -> dict:
    """Curves of the (MuonMuLL, MuonBkgLL) pairs, learned from the rows alone.

    The rows, sorted by s = MuonMuLL - MuonBkgLL, are tracked into curves MuonBkgLL = g_c(s)
    (:func:`_track_curves_py`).  Curves with less than ``min_frac`` of the weight are fragments: their
    rows go to the major curve whose piecewise-linear interpolant is nearest.  Where two curves cross,
    the labels may swap: each curve stays continuous (with a kink), which is all the model needs.
    Returns ``labels`` [N] (0..C-1), ``n_curves``, ``weight_fractions`` and ``on_curve_fraction``:
    the weighted fraction of rows within 10 (tol_abs + tol_rel*|b|) of the chord through their two
    neighbours on their own curve (1 for exact curves; the model is used only if it is >= 0.98)."""
    s = np.asarray(mu_ll, np.float64) - np.asarray(bkg_ll, np.float64)
    b = np.asarray(bkg_ll, np.float64)
    w = np.ones(s.size) if w is None else np.clip(np.asarray(w, np.float64), 0.0, None)
    o = np.argsort(s, kind="mergesort")
    ss, bb = s[o], b[o]
    delta = 1e-3 * max(ss[-1] - ss[0], 1e-6)
    lab = np.full(ss.size, -1, np.int64)
    n_tr, forced = _track_curves(ss, bb, lab, int(max_curves), float(tol_abs), float(tol_rel), float(kappa),
                                 float(delta))
    wf = np.bincount(lab, weights=w[o], minlength=n_tr) / max(w.sum(), 1e-300)
    major = np.flatnonzero(wf >= min_frac)
    if major.size == 0:
        major = np.array([int(np.argmax(wf))])
    minor = ~np.isin(lab, major)
    if minor.any():   # fragments -> nearest major curve (interpolant of its own rows)
        res = np.full((ss.size, major.size), np.inf)
        for k, c in enumerate(major):
            m = lab == c
            res[:, k] = np.abs(bb - np.interp(ss, ss[m], bb[m]))
        lab[minor] = major[np.argmin(res[minor], axis=1)]
    remap = np.full(n_tr, -1, np.int64)
    remap[major] = np.arange(major.size)
    lab = remap[lab]
    # continuity check: each row against the chord through its neighbours on its curve
    ok = np.zeros(ss.size, bool)
    for c in range(major.size):
        idx = np.flatnonzero(lab == c)
        if idx.size < 3:
            ok[idx] = True
            continue
        x, y = ss[idx], bb[idx]
        pred = np.empty_like(y)
        dx = x[2:] - x[:-2]
        fr = np.where(dx > 0, (x[1:-1] - x[:-2]) / np.where(dx > 0, dx, 1.0), 0.5)
        pred[1:-1] = y[:-2] + fr * (y[2:] - y[:-2])
        pred[0], pred[-1] = y[1], y[-2]
        ok[idx] = np.abs(y - pred) <= 10 * (tol_abs + tol_rel * np.abs(y))
    labels = np.empty(ss.size, np.int64)
    labels[o] = lab
    okr = np.empty(ss.size, bool)
    okr[o] = ok
    return {"labels": labels, "n_curves": int(major.size),
            "weight_fractions": [round(float(x), 5) for x in np.bincount(labels, weights=w, minlength=major.size) / max(w.sum(), 1e-300)],
            "on_curve_fraction": round(float((w * okr).sum() / max(w.sum(), 1e-300)), 5),
            "fragments_merged": int(n_tr - major.size), "rows_forced": int(forced)}


class CurveTables:
    """Per curve c: the quantile function s(v) of the curve's marginal distribution of s at ``n_knots``
    equally spaced levels v = 0 ... 1 (piecewise linear in v, as the flows' quantile tables), and the
    curve MuonBkgLL = g_c(s) at ``n_knots`` equally spaced values of s over the curve's range (so that
    the chords stay short in the tails, where a knot interval in v spans a long stretch of the curve).
    g_c is the linear interpolation of the curve's own rows after a running median of 5 rows, so that
    isolated mislabelled rows do not bend the curve."""

    def fit(self, mu_ll, bkg_ll, labels, n_curves, w=None, n_knots=1025):
        from scipy.ndimage import median_filter

        s = np.asarray(mu_ll, np.float64) - np.asarray(bkg_ll, np.float64)
        b = np.asarray(bkg_ll, np.float64)
        w = np.ones(s.size) if w is None else np.asarray(w, np.float64)
        self.v = np.linspace(0.0, 1.0, n_knots)
        S, G = np.zeros((n_curves, n_knots)), np.zeros((n_curves, n_knots))
        lo, step = np.zeros(n_curves), np.ones(n_curves)
        for c in range(n_curves):
            m = labels == c
            o = np.argsort(s[m], kind="mergesort")
            x, y, ww = s[m][o], b[m][o], w[m][o]
            if y.size >= 5:
                y = median_filter(y, size=5, mode="nearest")
            S[c] = weighted_quantile(x, ww, self.v) if x.size > 1 else np.full(n_knots, x[0])
            S[c, 0], S[c, -1] = x[0], x[-1]
            S[c] = np.maximum.accumulate(S[c])
            lo[c], step[c] = x[0], max((x[-1] - x[0]) / (n_knots - 1), 1e-9)
            G[c] = np.interp(lo[c] + step[c] * np.arange(n_knots), x, y)
        f = lambda a: np.asarray(a, np.float32).astype(np.float64)  # noqa: E731
        self.S, self.G, self.lo, self.step = f(S), f(G), f(lo), f(step)
        return self

    def curve(self, c, s):
        """g_c(s) as in the graph."""
        pos = np.clip((np.asarray(s, np.float64) - self.lo[c]) / self.step[c], 0.0, self.G.shape[1] - 1)
        return np.interp(pos, np.arange(self.G.shape[1]), self.G[c])

    def position(self, mu_ll, bkg_ll, labels):
        """v in [0, 1] of every row on its own curve (the curve's CDF, piecewise linear)."""
        s = np.asarray(mu_ll, np.float64) - np.asarray(bkg_ll, np.float64)
        v = np.empty(s.size)
        for c in range(self.S.shape[0]):
            m = labels == c
            v[m] = np.interp(s[m], self.S[c], self.v)
        return np.clip(v, 0.0, 1.0)


def build_curve_muon_model(kin_loc, kin_scale, tables: CurveTables, n_bins: int, hidden: int = 32, seed: int = 0,
                           p_steps_gev=()):
    """MUON model on curves: an MLP gives the logits of the curve c (n_curves) and, per curve, of the
    bin of v (n_bins equal bins of the curve's marginal CDF); ``forward(x, noise)`` -> (MuonMuLL,
    MuonBkgLL).  Sampling (in the graph, no random ops): the two N(0,1) noise inputs become uniforms
    u = Phi(z) (Erf); u1 picks the curve, u2 the bin and, through its remainder, the position inside
    the bin (cumulative sums as products with triangular matrices: the CumSum operator is ~10 ns per
    element on one onnxruntime thread); the curve's tables give s(v) and MuonBkgLL = g_c(s) (linear
    interpolation between knots), MuonMuLL = s + MuonBkgLL.  The density along a curve is piecewise
    constant in v within a bin: exact likelihood = cross-entropy of the curve + that of the bin.
    ``p_steps_gev``: the MLP's extra features p > step (as the classifier's; IsMuon's station requirements,
    hence the curves' weights, change at 3, 6 and 10 GeV)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    mods = make_modules()
    kin_transform, with_p_steps = mods["kin_transform"], mods["with_p_steps"]
    C, K = tables.S.shape
    B = int(n_bins)
    f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731

    class CurveMuon(nn.Module):
        def __init__(self):
            super().__init__()
            self.n_curves, self.n_bins, self.K = C, B, K
            self.register_buffer("c_loc", f32(kin_loc))
            self.register_buffer("c_inv", 1.0 / f32(kin_scale))
            self.register_buffer("p_steps", mods["p_steps_buffer"](p_steps_gev))
            self.net = nn.Sequential(nn.Linear(4 + len(p_steps_gev), hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                     nn.SiLU())
            self.head_c = nn.Linear(hidden, C)
            self.head_b = nn.Linear(hidden, C * B)
            self.register_buffer("S_flat", f32(tables.S.reshape(-1)))          # s(v), [C*K]
            self.register_buffer("G_flat", f32(tables.G.reshape(-1)))          # g_c(s), [C*L]
            self.register_buffer("g_lo", f32(tables.lo))
            self.register_buffer("g_inv", f32(1.0 / tables.step))
            self.L = tables.G.shape[1]
            self.register_buffer("tri_c", f32(np.triu(np.ones((C, C)))))    # cum_k = sum_{i <= k} p_i
            self.register_buffer("tri_b", f32(np.triu(np.ones((B, B)))))

        def heads(self, x):
            h = self.net(with_p_steps((kin_transform(x) - self.c_loc) * self.c_inv, x, self.p_steps))
            return self.head_c(h), self.head_b(h).reshape(-1, C, B)

        def targets(self, v, labels):
            b = np.minimum(np.floor(np.asarray(v) * B), B - 1).astype(np.int64)
            return torch.as_tensor(np.stack([np.asarray(labels, np.int64), b], 1))

        def loss(self, x, cb):
            lc, lb = self.heads(x)
            ce = nn.functional.cross_entropy
            return ce(lc, cb[:, 0], reduction="none") + ce(lb[torch.arange(x.shape[0]), cb[:, 0]], cb[:, 1],
                                                           reduction="none")

        def forward(self, x, noise):
            lc, lb = self.heads(x)
            u = 0.5 * (1.0 + torch.erf(noise * 0.7071067811865476))
            pc = torch.softmax(lc, dim=1)
            c = torch.clamp(((pc @ self.tri_c) < u[:, 0:1]).to(torch.float32).sum(dim=1, keepdim=True),
                            max=float(C - 1))
            rows = torch.arange(x.shape[0]) * C + c[:, 0].to(torch.long)
            pb = torch.softmax(lb.reshape(-1, B)[rows], dim=1)                 # bins of the chosen curve
            cum = pb @ self.tri_b
            u2 = u[:, 1:2]
            j = torch.clamp((cum < u2).to(torch.float32).sum(dim=1, keepdim=True), max=float(B - 1))
            pj = torch.gather(pb, 1, j.to(torch.long))
            lower = torch.gather(cum, 1, j.to(torch.long)) - pj
            t = torch.clamp((u2 - lower) / torch.clamp(pj, min=1e-12), 0.0, 1.0)
            v = ((j + t) / B)[:, 0]
            pos = torch.clamp(v * float(K - 1), 0.0, float(K - 1) - 1e-3)
            i0 = torch.floor(pos)
            fr = pos - i0
            ci = c[:, 0].to(torch.long)
            idx = ci * K + i0.to(torch.long)
            s = self.S_flat[idx] + fr * (self.S_flat[idx + 1] - self.S_flat[idx])
            L = self.L
            pos = torch.clamp((s - self.g_lo[ci]) * self.g_inv[ci], 0.0, float(L - 1) - 1e-3)
            i1 = torch.floor(pos)
            fr1 = pos - i1
            idx = ci * L + i1.to(torch.long)
            b = self.G_flat[idx] + fr1 * (self.G_flat[idx + 1] - self.G_flat[idx])
            return torch.stack([s + b, b], dim=1)

    return CurveMuon()


def sha256_of(path) -> str:
    import hashlib
    from pathlib import Path

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_card(path, card: dict):
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    _Dumper.add_representer(np.float32, lambda d, v: d.represent_float(float(v)))
    _Dumper.add_representer(np.float64, lambda d, v: d.represent_float(float(v)))
    _Dumper.add_representer(np.int64, lambda d, v: d.represent_int(int(v)))
    _Dumper.add_representer(np.bool_, lambda d, v: d.represent_bool(bool(v)))
    with open(path, "w") as f:
        yaml.dump(card, f, Dumper=_Dumper, sort_keys=False, width=110, default_flow_style=None)


# ----------------------------------------------------------------------------------------------
# post-training recalibration of a flow's inverse marginal quantile transform, per momentum group
# (the PID counterpart of models.training.tracking.generative.calibrate_flow), done on the exported
# ONNX graph so that it also applies to a shipped model whose torch parameters are gone
# ----------------------------------------------------------------------------------------------
#: ONNX metadata key holding the name of the flow's latent tensor z (input of the quantile lookup)
LATENT_KEY = "flashsim_flow_latent"
RECAL_KEY = "flashsim_flow_recalibration"


def tie_table(t, w, levels, heavy_fraction=0.002):
    """Weighted quantiles of one column at ``levels`` with the knots of a point mass made exactly equal to
    it (as :meth:`TieGaussianizer.fit`): a level inside a tie's CDF interval gives the tie value bit for bit.
    The tie's first and last knots are those whose levels are *nearest* to the ends of its CDF interval
    [F(v-), F(v)]: the generated mass between them (the mass reproduced exactly) is then the tie's fraction
    without the bias of about one grid cell that taking only the knots inside the interval gives."""
    t = np.asarray(t, np.float64)
    w = np.clip(np.asarray(w, np.float64), 0.0, None)
    levels = np.clip(levels, 0.0, 1.0)
    q = weighted_quantile(t, w, levels)
    vals, counts = np.unique(t, return_counts=True)
    wt = max(w.sum(), 1e-300)
    for v in vals[counts > heavy_fraction * t.shape[0]]:
        q[np.abs(q - v) <= 1e-6 * max(1.0, abs(v))] = v
        f_lo, f_hi = float(w[t < v].sum() / wt), float(w[t <= v].sum() / wt)
        k0, k1 = int(np.argmin(np.abs(levels - f_lo))), int(np.argmin(np.abs(levels - f_hi)))
        if k0 <= k1:
            q[k0:k1 + 1] = v
    return np.maximum.accumulate(q.astype(np.float32).astype(np.float64))


def heavy_ties(t, heavy_fraction=0.002):
    """[(column, value)] of the point masses (> heavy_fraction of the rows) of ``t``."""
    out = []
    for i in range(t.shape[1]):
        vals, counts = np.unique(t[:, i], return_counts=True)
        out += [(i, float(v)) for v in vals[counts > heavy_fraction * t.shape[0]]]
    return out


def momentum_groups(lp, t, w, n_groups=24, n_cells=256, min_rows=1500, max_tree_splits=6, min_gain=2e-3, ties=None):
    """Groups of a fine uniform grid in ln p (``n_cells`` cells over the rows' range) for the per-group
    tables.  First a regression tree of the point-mass indicators of ``t`` in ln p (the splits with the
    largest weighted variance reduction, at most ``max_tree_splits``, each reducing it by more than
    ``min_gain`` of the total weight and leaving >= ``min_rows`` rows per side: e.g. a Cherenkov threshold
    where a tie switches on or off), then every leaf cut into equal-weight groups of about 1/``n_groups``
    of the rows (>= ``min_rows`` each).  ``ties``: :func:`heavy_ties` of ``t`` if already known.  Returns (lp0,
    lp1, cell -> group array, group edges in ln p)."""
    lp = np.asarray(lp, np.float64)
    ties = heavy_ties(t) if ties is None else ties
    w = np.clip(np.asarray(w, np.float64), 0.0, None)
    lp0, lp1 = float(lp.min()), float(np.nextafter(lp.max(), np.inf))
    cell = np.clip(((lp - lp0) * (n_cells / (lp1 - lp0))).astype(np.int64), 0, n_cells - 1)
    W = np.bincount(cell, weights=w, minlength=n_cells)
    N = np.bincount(cell, minlength=n_cells).astype(np.float64)
    H = np.stack([np.bincount(cell, weights=w * (t[:, c] == v), minlength=n_cells) for c, v in ties]) \
        if ties else np.zeros((0, n_cells))

    def best_split(a, b):   # cells [a, b)
        cw, cn, ch = np.cumsum(W[a:b]), np.cumsum(N[a:b]), np.cumsum(H[:, a:b], axis=1)
        wt, nt, ht = cw[-1], cn[-1], ch[:, -1:]
        best = (0.0, None)
        for k in range(b - a - 1):
            wl, wr = cw[k], wt - cw[k]
            if cn[k] < min_rows or nt - cn[k] < min_rows or wl <= 0 or wr <= 0:
                continue
            fl, fr = ch[:, k] / wl, (ht[:, 0] - ch[:, k]) / wr
            gain = float((wl * wr / wt * (fl - fr) ** 2).sum())
            if gain > best[0]:
                best = (gain, a + k + 1)
        return best

    leaves = [(0, n_cells)]
    for _ in range(max_tree_splits if H.shape[0] else 0):
        cands = [(best_split(a, b), (a, b)) for a, b in leaves]
        (gain, cut), (a, b) = max(cands, key=lambda c: c[0][0])
        if cut is None or gain <= min_gain * W.sum():
            break
        leaves.remove((a, b))
        leaves += [(a, cut), (cut, b)]
    leaves.sort()
    target = W.sum() / max(n_groups, 1)
    edges = []
    for a, b in leaves:
        m = int(max(1, min(round(W[a:b].sum() / target), N[a:b].sum() // max(min_rows, 1))))
        cw = np.cumsum(W[a:b])
        cuts = sorted({a + int(np.searchsorted(cw, cw[-1] * j / m)) + 1 for j in range(1, m)} - {a, b})
        edges += [a] + cuts
    edges = sorted(set(edges)) + [n_cells]
    group_of_cell = np.zeros(n_cells, np.int64)
    for g, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        group_of_cell[a:b] = g
    lp_edges = [lp0 + e * (lp1 - lp0) / n_cells for e in edges]
    return lp0, lp1, group_of_cell, lp_edges


def _latent_name(model):
    """Name of the latent tensor z of an exported flow: from the metadata of a recalibrated graph, or the
    first input of the ``Sub`` that starts the quantile lookup Gather(q_flat, (Clip((z - g0) * inv)) ...)."""
    meta = {p.key: p.value for p in model.metadata_props}
    if LATENT_KEY in meta:
        return meta[LATENT_KEY]
    prod = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type == "Gather" and n.input[0] == "q_flat":
            node = prod[n.input[1]]                 # Add(Cast(Floor(Clip)), col_off)
            chain = ["Add", "Cast", "Floor", "Clip", "Mul", "Sub"]
            for i, op in enumerate(chain):
                if node.op_type != op:
                    break
                if op == "Sub":
                    return node.input[0]
                node = prod[node.input[0]]
    raise ValueError("no flow quantile lookup (Gather on q_flat) found in the graph")


def _prune_to(model, name):
    """(nodes, initializers) needed to compute tensor ``name`` from the graph inputs, in graph order."""
    prod = {o: n for n in model.graph.node for o in n.output}
    need, stack, keep = set(), [name], set()
    while stack:
        t = stack.pop()
        if t in need:
            continue
        need.add(t)
        n = prod.get(t)
        if n is not None and id(n) not in keep:
            keep.add(id(n))
            stack += [i for i in n.input if i]
    nodes = [n for n in model.graph.node if id(n) in keep]
    inits = [i for i in model.graph.initializer if i.name in need]
    return nodes, inits


def flow_latent(path, x, noise, chunk=65536):
    """Latent z [N, dim] of an exported flow (the input of its quantile lookup) for inputs x and noise."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(path))
    z = _latent_name(model)
    nodes, inits = _prune_to(model, z)
    dim = noise.shape[1]
    g = helper.make_graph(nodes, "latent", list(model.graph.input),
                          [helper.make_tensor_value_info(z, onnx.TensorProto.FLOAT, ["N", dim])], inits)
    m = helper.make_model(g, opset_imports=model.opset_import, ir_version=model.ir_version)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = [sess.run(None, {"x": np.asarray(x[i:i + chunk], np.float32),
                           "noise": np.asarray(noise[i:i + chunk], np.float32)})[0] for i in range(0, len(x), chunk)]
    return np.concatenate(out).astype(np.float64)


def _cells(v, v0, v1, n_cells, log=False):
    """Cell of each value on a uniform grid of n_cells over [v0, v1) as the graph computes it (float32)."""
    v = np.asarray(v, np.float32)
    if log:
        v = np.log(np.maximum(v, np.float32(1.0))).astype(np.float32)
    pos = np.clip((v - np.float32(v0)) * np.float32(n_cells / (v1 - v0)), np.float32(0.0),
                  np.float32(n_cells - 1e-3)).astype(np.float32)
    return np.floor(pos).astype(np.int64)


def group_of_rows(kin, grid):
    """Group of each row (KIN_INPUTS) on the cell grid of :func:`recalibrate_flow_onnx`."""
    pc = _cells(kin[:, 0], grid["lp0"], grid["lp1"], grid["n_p_cells"], log=True)
    ec = _cells(kin[:, 1], grid["eta0"], grid["eta1"], grid["n_eta_cells"]) if grid["n_eta_cells"] > 1 else 0
    return grid["group_of_cell"][pc * grid["n_eta_cells"] + ec]


def recalibrated_tables(grp, t, w, z, knots, n_groups, eta_groups, min_rows):
    """The recalibration shared by the flows (:func:`recalibrate_flow_onnx`) and the autoregressive RICH model
    (:meth:`ARScales.recalibrate`).  ``z`` [N * draws, dim]: the model's latent (or position on its u scale)
    when sampled ``draws`` times on the training rows (group ``grp``, targets ``t``, weights ``w``, same row
    order).  Per group and column the table is q_k = Q_t,group(F_z,group(knots_k)), point masses exact
    (:func:`tie_table`); a sparse (momentum, eta) cell (< min_rows / 4 rows) takes its momentum group's rows.
    Returns (tables [n_groups, dim, K], the levels F_z,group(knots) [n_groups, dim, K])."""
    t = np.asarray(t, np.float64)
    draws = z.shape[0] // t.shape[0]
    grp_z, wz = np.concatenate([grp] * draws), np.concatenate([w] * draws)
    ne = max(int(eta_groups), 1)
    dim = t.shape[1]
    tab = np.zeros((n_groups, dim, knots.size))
    lev = np.zeros_like(tab)
    for k in range(n_groups):
        mt, mz = grp == k, grp_z == k
        if mt.sum() < min_rows // 4:   # a sparse (momentum, eta) cell: the table of its momentum group
            mt, mz = grp // ne == k // ne, grp_z // ne == k // ne
        for c in range(dim):
            zc, wc = z[mz, c], wz[mz]
            o = np.argsort(zc, kind="mergesort")
            cw = np.concatenate([[0.0], np.cumsum(wc[o])])
            lev[k, c] = cw[np.searchsorted(zc[o], knots, side="left")] / max(cw[-1], 1e-300)
            tab[k, c] = tie_table(t[mt, c], w[mt], lev[k, c])
    return tab, lev


def recalibrate_flow_onnx(path, kin, t, w, *, post=None, n_groups=24, n_knots=601, g_max=5.0, n_draws=8,
                          seed=77, min_rows=1500, eta_groups=1, out_path=None) -> dict:
    """Post-training recalibration of an exported flow (``path``, rewritten unless ``out_path``).

    The flow is sampled ``n_draws`` times on the training conditions ``kin`` (KIN_INPUTS; targets ``t`` in
    flow variables, weights ``w``).  Per momentum group (:func:`momentum_groups`) and variable, the
    generated latent marginal F_gen replaces the Gaussian levels of the quantile table:
    q_k = Q_t,group(F_gen,group(g_k)), with the point masses kept exact (:func:`tie_table`), so the
    generated marginals per group -- point-mass fractions included -- equal the training sample's.  The new
    graph keeps the flow up to its latent z and replaces the single table by per-group tables of
    ``n_knots`` knots on [-g_max, g_max], the group picked by one Gather on a fine grid in ln p (crossed with
    ``eta_groups`` equal-weight groups in eta when > 1).
    ``post="rich"``: outputs the DLLs ``t @ B`` of the model's RICH basis (its metadata, :func:`onnx_rich_basis`;
    ``t`` must be in that basis) as :func:`build_pid_flow`.  Idempotent in the sense
    that a recalibrated graph is recalibrated from its latent again.  Returns a summary for the card."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    kin, t = np.asarray(kin, np.float32), np.asarray(t, np.float64)
    w = np.clip(np.ones(len(t)) if w is None else np.asarray(w, np.float64), 0.0, None)
    dim = t.shape[1]
    rng = np.random.default_rng(seed)
    xs = np.concatenate([kin] * n_draws)
    z = flow_latent(path, xs, rng.standard_normal((xs.shape[0], dim)).astype(np.float32))
    ties = heavy_ties(t)
    grid, G, n_pg, eta_edges, lp_edges = make_group_grid(kin, t, w, n_groups=n_groups, eta_groups=eta_groups,
                                                         min_rows=min_rows, ties=ties)
    lp0, lp1, group_of_cell = grid["lp0"], grid["lp1"], grid["group_of_cell"]
    grp = group_of_rows(kin, grid)
    g = np.linspace(-g_max, g_max, n_knots)
    tab, _ = recalibrated_tables(grp, t, w, z, g, G, eta_groups, min_rows)
    tie_before, tie_target = {}, {}
    ne = max(int(eta_groups), 1)
    # figures: point-mass fractions per momentum group (eta groups pooled), training rows and the flow's
    # output before this recalibration (one draw per row)
    pgrp = grp // ne

    def fractions(tt, c, v):
        return [round(float((w[pgrp == k] * (tt[pgrp == k, c] == v)).sum() / max(w[pgrp == k].sum(), 1e-300)), 4)
                for k in range(n_pg)]

    for c, v in ties:
        tie_target[f"col{c}={v:g}"] = fractions(t, c, v)
    model = onnx.load(str(path))
    zname = _latent_name(model)
    # generated fraction before: the flow's previous output on the same draws
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    rng2 = np.random.default_rng(seed + 1)
    y_old = sess.run(None, {"x": kin, "noise": rng2.standard_normal((kin.shape[0], dim)).astype(np.float32)})[0]
    t_old = y_old.astype(np.float64)
    basis = onnx_rich_basis(path) if post == "rich" else None
    if post == "rich":
        t_old = rich_to_flow(t_old, basis)
    for c, v in ties:
        tie_before[f"col{c}={v:g}"] = fractions(t_old, c, v)

    nodes, inits = _prune_to(model, zname)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    c = lambda name, a: numpy_helper.from_array(np.asarray(a), name)  # noqa: E731
    nc, nec = grid["n_p_cells"], grid["n_eta_cells"]
    q_lo = tab.astype(np.float32)
    q_d = np.concatenate([q_lo[:, :, 1:] - q_lo[:, :, :-1], np.zeros((G, dim, 1), np.float32)], axis=2)
    # rows (q_k, q_{k+1} - q_k): one Gather per value; a tie's knots are equal, so its cells give
    # lo + frac * 0 = the tie value exactly
    # ONNX Runtime note: binary ops on [N, 1] tensors (and Slices) take a slow broadcast path (~30 ns per
    # row each); everything below is on [N] or [N, dim] tensors, the group offsets come as [N, dim] rows
    # of one Gather, and the RICH post-processing is one MatMul
    off_rows = (group_of_cell[:, None] * dim * n_knots + np.arange(dim)[None, :] * n_knots).astype(np.float32)
    new_inits = [
        c("recal/q_pair", np.stack([q_lo.reshape(-1), q_d.reshape(-1)], axis=1)),
        c("recal/i0s", np.array(0, np.int64)), c("recal/i1s", np.array(1, np.int64)),
        c("recal/off_rows", off_rows),
        c("recal/one", f32(1.0)), c("recal/lp0", f32(lp0)), c("recal/inv_dlp", f32(nc / (lp1 - lp0))),
        c("recal/zero", f32(0.0)), c("recal/cmax", f32(nc - 1e-3)), c("recal/g0", f32(-g_max)),
        c("recal/inv_dg", f32((n_knots - 1) / (2 * g_max))), c("recal/kmax", f32(n_knots - 1 - 1e-3)),
    ]
    N = helper.make_node
    new_nodes = [
        N("Gather", ["x", "recal/i0s"], ["recal/p"], axis=1),                # [N]
        N("Max", ["recal/p", "recal/one"], ["recal/pc"]),
        N("Log", ["recal/pc"], ["recal/lp"]),
        N("Sub", ["recal/lp", "recal/lp0"], ["recal/lps"]),
        N("Mul", ["recal/lps", "recal/inv_dlp"], ["recal/lpc"]),
        N("Clip", ["recal/lpc", "recal/zero", "recal/cmax"], ["recal/lpk"]),
        N("Floor", ["recal/lpk"], ["recal/cellf"]),
    ]
    if nec > 1:
        new_inits += [c("recal/i1s_eta", np.array(1, np.int64)), c("recal/eta0", f32(grid["eta0"])),
                      c("recal/inv_deta", f32(nec / (grid["eta1"] - grid["eta0"]))), c("recal/emax", f32(nec - 1e-3)),
                      c("recal/nec", f32(nec))]
        new_nodes += [
            N("Gather", ["x", "recal/i1s_eta"], ["recal/eta"], axis=1),
            N("Sub", ["recal/eta", "recal/eta0"], ["recal/etas"]),
            N("Mul", ["recal/etas", "recal/inv_deta"], ["recal/etac"]),
            N("Clip", ["recal/etac", "recal/zero", "recal/emax"], ["recal/etak"]),
            N("Floor", ["recal/etak"], ["recal/ecellf"]),
            N("Mul", ["recal/cellf", "recal/nec"], ["recal/pcell_e"]),
            N("Add", ["recal/pcell_e", "recal/ecellf"], ["recal/cell2f"]),
            N("Cast", ["recal/cell2f"], ["recal/cell"], to=TensorProto.INT64),
        ]
    else:
        new_nodes += [N("Cast", ["recal/cellf"], ["recal/cell"], to=TensorProto.INT64)]
    new_nodes += [
        N("Gather", ["recal/off_rows", "recal/cell"], ["recal/off"]),        # [N, dim]
        N("Sub", [zname, "recal/g0"], ["recal/zs"]),
        N("Mul", ["recal/zs", "recal/inv_dg"], ["recal/zp"]),
        N("Clip", ["recal/zp", "recal/zero", "recal/kmax"], ["recal/pos"]),
        N("Floor", ["recal/pos"], ["recal/i0"]),
        N("Sub", ["recal/pos", "recal/i0"], ["recal/frac"]),
        N("Add", ["recal/i0", "recal/off"], ["recal/idxf"]),
        N("Cast", ["recal/idxf"], ["recal/idx"], to=TensorProto.INT64),
        N("Gather", ["recal/q_pair", "recal/idx"], ["recal/pair"]),          # [N, dim, 2]
        N("Gather", ["recal/pair", "recal/i0s"], ["recal/lo"], axis=2),
        N("Gather", ["recal/pair", "recal/i1s"], ["recal/d"], axis=2),
        N("Mul", ["recal/frac", "recal/d"], ["recal/fd"]),
    ]
    if post == "rich":
        # t @ B: B has entries 0 and +-1 only, products by 0 and 1 are exact, so a zero of DLLp - DLLK gives
        # DLLp == DLLK bit for bit
        new_inits.append(c("recal/post", rich_basis_matrices(basis)[1].astype(np.float32)))
        new_nodes += [N("Add", ["recal/lo", "recal/fd"], ["recal/t"]), N("MatMul", ["recal/t", "recal/post"], ["y"])]
    else:
        new_nodes += [N("Add", ["recal/lo", "recal/fd"], ["y"])]
    for i, n in enumerate(new_nodes):
        n.name = f"recal/{i}_{n.op_type}"
    out_vi = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dim])
    graph = helper.make_graph(nodes + new_nodes, model.graph.name, list(model.graph.input), [out_vi], inits + new_inits)
    new = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version,
                            producer_name=model.producer_name, producer_version=model.producer_version)
    summary = {
        "method": "post-training marginal recalibration: the flow sampled on the training conditions "
                  f"({n_draws} noise draws per row); per (momentum, eta) group and variable the quantile table is "
                  "q_k = Q_train,group(F_gen,group(g_k)) with point masses kept exact, so the generated marginals per "
                  "group, point-mass fractions included, equal the training sample's",
        "groups": G, "momentum_groups": n_pg, "eta_groups": max(int(eta_groups), 1),
        "eta_group_edges": [round(float(e), 4) for e in eta_edges], "knots": int(n_knots), "draws": int(n_draws),
        "rows": int(len(t)),
        "group_edges_p_GeV": [round(float(np.exp(e)) / 1000.0, 3) for e in lp_edges],
        "point_mass_fraction_per_momentum_group": {
            (f"{RICH_FLOW_VARIABLES[basis][int(k[3])]} == {k.split('=')[1]}" if post == "rich" else k):
            {"training": tie_target[k], "generated_before": tie_before[k]} for k in tie_target},
    }
    if post == "rich":
        summary["flow_variables"] = list(RICH_FLOW_VARIABLES[basis])
    del new.metadata_props[:]
    meta = json.dumps({kk: summary[kk] for kk in ("groups", "knots", "draws", "rows")})
    for k, v in ((LATENT_KEY, zname), (RECAL_KEY, meta)) + (((BASIS_KEY, basis),) if post == "rich" else ()):
        p = new.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(new)
    onnx.save(new, str(out_path or path))
    return summary


# ----------------------------------------------------------------------------------------------
# noise scale of an exported generative model (GlobalPID; issue 6)
# ----------------------------------------------------------------------------------------------
NOISE_SCALE_KEY = "flashsim_noise_scale"
_NOISE_SCALE_NODE = "flashsim_noise_scale_mul"


def onnx_noise_scale(path):
    """The per-dimension noise scale recorded in an exported model (None: the graph has none, i.e. 1)."""
    meta = onnx_metadata(path)
    return json.loads(meta[NOISE_SCALE_KEY]) if NOISE_SCALE_KEY in meta else None


def set_noise_scale_onnx(path, scale, out_path=None):
    """Multiply the ``noise`` input of an exported model by ``scale`` (one factor per noise dimension)
    inside the graph: ``noise' = noise * scale`` feeds every node that read ``noise``.  The interface
    (x, noise ~ N(0, 1)) is unchanged.  Setting it again replaces the factor (it does not stack); the
    factor is recorded in the metadata (NOISE_SCALE_KEY)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    noise = [i for i in g.input if i.name == "noise"]
    if not noise:
        raise ValueError(f"{path}: no 'noise' input to scale")
    dim = int(noise[0].type.tensor_type.shape.dim[1].dim_value)
    scale = np.broadcast_to(np.asarray(scale, np.float32), (dim,)).copy()
    const = "flashsim_noise_scale_value"
    if not any(n.name == _NOISE_SCALE_NODE for n in g.node):
        for n in g.node:
            for k, v in enumerate(n.input):
                if v == "noise":
                    n.input[k] = "noise_scaled"
        g.node.insert(0, helper.make_node("Mul", ["noise", const], ["noise_scaled"], name=_NOISE_SCALE_NODE))
    keep = [i for i in g.initializer if i.name != const]
    del g.initializer[:]
    g.initializer.extend(keep + [numpy_helper.from_array(scale.reshape(1, dim), const)])
    _put_metadata(model, {NOISE_SCALE_KEY: json.dumps([round(float(v), 6) for v in scale])})
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path or path))


# ----------------------------------------------------------------------------------------------
# RICH: autoregressive model of conditional histograms on per-group quantile scales (issue 6)
# ----------------------------------------------------------------------------------------------
def make_group_grid(kin, t, w, n_groups=24, eta_groups=3, min_rows=1500, ties=None):
    """(momentum, eta) groups of the rows, as the flow recalibration builds them (momentum_groups: a tree
    of the point-mass indicators of ``t`` in ln p, then equal-weight groups; crossed with ``eta_groups``
    equal-weight eta groups on a 16-cell grid).  Returns (grid for :func:`group_of_rows`, number of groups,
    number of momentum groups, eta group edges, ln p group edges).  Used by the flows' recalibration
    (:func:`recalibrate_flow_onnx`) and the autoregressive RICH model's scales."""
    kin = np.asarray(kin, np.float32)
    w = np.clip(np.ones(len(t)) if w is None else np.asarray(w, np.float64), 0.0, None)
    lp = np.log(np.maximum(kin[:, 0].astype(np.float64), 1.0))
    lp0, lp1, p_group_of_cell, lp_edges = momentum_groups(lp, t, w, n_groups=n_groups, min_rows=min_rows,
                                                          ties=heavy_ties(t) if ties is None else ties)
    n_pg = int(p_group_of_cell.max()) + 1
    grid = {"lp0": lp0, "lp1": lp1, "n_p_cells": p_group_of_cell.shape[0], "n_eta_cells": 1, "eta0": 0.0, "eta1": 1.0}
    eta_edges = []
    if eta_groups > 1:
        eta = kin[:, 1].astype(np.float64)
        grid.update(eta0=float(eta.min()), eta1=float(np.nextafter(eta.max(), np.inf)), n_eta_cells=16)
        eta_edges = list(weighted_quantile(eta, w, np.arange(1, eta_groups) / eta_groups))
        centres = grid["eta0"] + (np.arange(16) + 0.5) * (grid["eta1"] - grid["eta0"]) / 16
        e_group_of_cell = np.searchsorted(eta_edges, centres)
        grid["group_of_cell"] = (p_group_of_cell[:, None] * eta_groups + e_group_of_cell[None, :]).reshape(-1)
    else:
        grid["group_of_cell"] = p_group_of_cell
    return grid, n_pg * max(int(eta_groups), 1), n_pg, eta_edges, lp_edges


class ARScales:
    """Per (momentum, eta) group and variable, the training rows' quantile function on the bin scale of the
    autoregressive RICH model: ``n_bins`` bins in the group's marginal CDF u with edges Phi(e_b), e_b =
    -z_end, linspace(-z_in, z_in, n_bins - 1), +z_end (so the tails get bins of ~0.1 sigma, not 1/n_bins of
    the rows), each bin cut into ``sub`` equal steps of u: knots at n_bins * sub + 1 levels, point masses
    exact (:func:`tie_table`).  A value at bin b and remainder r in [0, 1] is the linear interpolation at
    knot position b * sub + r * sub, so the graph needs no search.  ``pit`` gives the training rows'
    randomised probability integral transform u (uniform inside a point mass's CDF interval)."""

    def __init__(self, n_bins=64, sub=4, z_in=3.5, z_end=4.5):
        from scipy.special import ndtr

        self.n_bins, self.sub = int(n_bins), int(sub)
        self.e = np.concatenate([[-z_end], np.linspace(-z_in, z_in, n_bins - 1), [z_end]])
        self.u_edges = ndtr(self.e)
        self.u_edges[0], self.u_edges[-1] = 0.0, 1.0
        fr = np.arange(self.sub) / self.sub
        steps = self.u_edges[:-1, None] + fr[None, :] * np.diff(self.u_edges)[:, None]
        self.levels = np.concatenate([steps.reshape(-1), [1.0]])

    def fit(self, kin, t, w, grid, n_groups, min_rows=1500, eta_groups=3):
        t = np.asarray(t, np.float64)
        w = np.clip(np.asarray(w, np.float64), 0.0, None)
        self.grid, self.G, self.dim = grid, int(n_groups), t.shape[1]
        grp = group_of_rows(kin, grid)
        ne = max(int(eta_groups), 1)
        self.tab = np.zeros((self.G, self.dim, self.levels.size))
        for k in range(self.G):
            m = grp == k
            if m.sum() < min_rows // 4:       # a sparse (momentum, eta) cell: its momentum group's rows
                m = grp // ne == k // ne
            for c in range(self.dim):
                self.tab[k, c] = tie_table(t[m, c], w[m], self.levels)
        self.tab = self.tab.astype(np.float32).astype(np.float64)
        return self

    def _on_bins(self, u):
        """(u, bin index b, remainder r in the bin, bin-linear z) of positions u on the u scale."""
        u = np.clip(u, 1e-12, 1 - 1e-12)
        b = np.clip(np.searchsorted(self.u_edges, u, side="right") - 1, 0, self.n_bins - 1)
        r = np.clip((u - self.u_edges[b]) / np.diff(self.u_edges)[b], 0.0, 1.0)
        return u, b, r, self.e[b] + r * np.diff(self.e)[b]

    def pit(self, kin, t, w, seed=0):
        """Randomised PIT u [N, dim] of rows in their group (weights: positive part; ties: uniform in their
        CDF interval), with bin index b, remainder r and the bin-linear z of each."""
        rng = np.random.default_rng(seed)
        t = np.asarray(t, np.float64)
        w = np.clip(np.asarray(w, np.float64), 0.0, None)
        grp = group_of_rows(kin, self.grid)
        u = np.zeros_like(t)
        for k in np.unique(grp):
            rows = np.flatnonzero(grp == k)
            wk = w[rows]
            for c in range(self.dim):
                o = np.lexsort((rng.random(rows.size), t[rows, c]))
                cw = np.concatenate([[0.0], np.cumsum(wk[o])])
                u[rows[o], c] = (cw[:-1] + rng.random(rows.size) * wk[o]) / max(cw[-1], 1e-300)
        return self._on_bins(u)

    def cdf(self, kin, t, seed=0):
        """u [N, dim] of rows (e.g. held-out rows) on the fitted tables' scale: the inverse of the piecewise-
        linear quantile function of their group, uniform over a point mass's CDF interval; with the bin
        index b, remainder r and bin-linear z as :meth:`pit`."""
        rng = np.random.default_rng(seed)
        t = np.asarray(t, np.float64)
        grp = group_of_rows(kin, self.grid)
        u = np.zeros_like(t)
        L = self.levels
        for k in np.unique(grp):
            rows = np.flatnonzero(grp == k)
            for c in range(self.dim):
                q, v = self.tab[k, c], t[rows, c]
                lo = np.clip(np.searchsorted(q, v, side="left"), 0, L.size - 1)
                hi = np.clip(np.searchsorted(q, v, side="right"), 0, L.size)
                tie = hi - lo >= 2
                j = np.clip(lo, 1, L.size - 1)
                dq = q[j] - q[j - 1]
                lin = L[j - 1] + np.where(dq > 0, (v - q[j - 1]) / np.where(dq > 0, dq, 1.0), 0.0) * (L[j] - L[j - 1])
                rnd = L[lo] + rng.random(rows.size) * (L[np.maximum(hi - 1, lo)] - L[lo])
                u[rows, c] = np.where(tie, rnd, np.clip(lin, 0.0, 1.0))
        return self._on_bins(u)

    def recalibrate(self, kin, t, w, u_gen, min_rows=1500, eta_groups=3):
        """Post-training recalibration (as the flows', :func:`recalibrate_flow_onnx`): with ``u_gen`` [N * draws,
        dim] the model's positions on the u scale when sampled on the training conditions ``kin`` (repeated
        draws times, same row order), each group's table becomes q_k = Q_train,group(F_gen,group(level_k)), so the
        generated marginals per group, point masses included, are the training rows'.  Returns the largest
        shift |F_gen(level) - level| per variable (before)."""
        w = np.clip(np.asarray(w, np.float64), 0.0, None)
        tab, lev = recalibrated_tables(group_of_rows(kin, self.grid), t, w, u_gen, self.levels, self.G, eta_groups,
                                       min_rows)
        self.tab = tab.astype(np.float32).astype(np.float64)
        return np.abs(lev - self.levels).max(axis=(0, 2))


#: generation order of the flow variables in the AR model: DLLK, DLLp - DLLK first, then DLLe, DLLmu (basis "dll":
#: DLLe, DLLmu, DLLK, DLLp - DLLK) or DLLe - DLLp, DLLmu - DLLp (basis "pdiff": DLLe - DLLp, DLLmu - DLLp, DLLp - DLLK,
#: DLLK)
AR_ORDERS = {"dll": (2, 3, 0, 1), "pdiff": (3, 2, 0, 1)}
AR_ORDER = AR_ORDERS["dll"]
RICH_MODEL_KEY = "flashsim_rich_model"


def onnx_rich_model(path) -> str:
    """The kind of an exported RICH model from its metadata: "ar" or "flow" (none recorded)."""
    return onnx_metadata(path).get(RICH_MODEL_KEY, "flow")


def ar_value_feature(v):
    """Conditioning feature of an already generated DLL-like value (compressed tails): asinh(v / 5), written
    as sign(a) log(|a| + sqrt(a^2 + 1)) as in the graph (the exporter has no Asinh)."""
    a = np.asarray(v, np.float64) / 5.0
    return np.sign(a) * np.log(np.abs(a) + np.sqrt(a * a + 1.0))


def build_ar_rich_model(kin_loc, kin_scale, scales: ARScales, n_in: int = 4, hidden: int = 64, seed: int = 0,
                        basis: str = "dll", order=AR_ORDER):
    """Autoregressive RICH model: the flow variables in ``order``, each from a conditional histogram
    (``scales.n_bins`` logits of an MLP of the kinematics (+ isMuon when n_in = 5) and of the variables
    already generated) on its group's quantile scale (:class:`ARScales`); ``forward(x, noise)`` -> the 4
    DLLs.  Exact likelihood: the sum of the cross-entropies of the bins (the density is constant in u
    inside a bin).  Sampling in the graph (no random ops): noise -> u = Phi(noise) (Erf), the bin from
    the cumulative sum (product with a triangular matrix), the remainder inside the bin -> the value by
    one Gather of the group's table."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    kin_transform = make_modules()["kin_transform"]
    B, S, D = scales.n_bins, scales.sub, scales.dim
    K = scales.levels.size
    f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    B_rich = rich_basis_matrices(basis)[1]
    grid = scales.grid

    class ARRich(nn.Module):
        def __init__(self):
            super().__init__()
            self.n_in, self.order = n_in, tuple(order)
            self.register_buffer("c_loc", f32(kin_loc))
            self.register_buffer("c_inv", 1.0 / f32(kin_scale))
            self.nets = nn.ModuleList([
                nn.Sequential(nn.Linear(n_in + 2 * j, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                              nn.Linear(hidden, B)) for j in range(D)])
            self.register_buffer("tri", f32(np.triu(np.ones((B, B)))))
            self.register_buffer("e_lo", f32(scales.e[:-1]))
            self.register_buffer("e_w", f32(np.diff(scales.e)))
            self.register_buffer("u_lo", torch.as_tensor(scales.u_edges[:-1], dtype=torch.float64))
            self.register_buffer("u_w", torch.as_tensor(np.diff(scales.u_edges), dtype=torch.float64))
            tab = scales.tab[:, list(order), :]                                 # [G, D, K] in generation order
            self.register_buffer("tab_flat", f32(tab.reshape(-1)))
            self.register_buffer("goc", torch.as_tensor(np.asarray(grid["group_of_cell"], np.int64)))
            self.register_buffer("post", f32(np.eye(D)[list(order)] @ B_rich))  # generation order -> DLLs
            self.lp0, self.nc = float(grid["lp0"]), int(grid["n_p_cells"])
            self.inv_dlp = float(grid["n_p_cells"] / (grid["lp1"] - grid["lp0"]))
            self.nec = int(grid["n_eta_cells"])
            self.eta0 = float(grid["eta0"])
            self.inv_deta = float(self.nec / (grid["eta1"] - grid["eta0"]))

        def cond(self, x):
            k = (kin_transform(x[:, :4]) - self.c_loc) * self.c_inv
            return torch.cat([k, x[:, 4:]], dim=1) if self.n_in > 4 else k

        def group(self, x):
            lp = torch.log(torch.clamp(x[:, 0], min=1.0))
            pc = torch.floor(torch.clamp((lp - self.lp0) * self.inv_dlp, 0.0, self.nc - 1e-3))
            cell = pc
            if self.nec > 1:
                ec = torch.floor(torch.clamp((x[:, 1] - self.eta0) * self.inv_deta, 0.0, self.nec - 1e-3))
                cell = pc * self.nec + ec
            return self.goc[cell.to(torch.long)]

        def loss(self, x, feats, bins):
            """feats [N, 2 * D] (bin-linear z and the value feature of each variable, generation order),
            bins [N, D] (LongTensor)."""
            c = self.cond(x)
            total = 0.0
            for j, net in enumerate(self.nets):
                h = torch.cat([c, feats[:, :2 * j]], dim=1) if j else c
                total = total + nn.functional.cross_entropy(net(h), bins[:, j], reduction="none")
            return total

        def set_tables(self, sc):
            self.tab_flat.copy_(f32(sc.tab[:, list(self.order), :].reshape(-1)))

        def forward(self, x, noise):
            return self.sample(x, noise)[0] @ self.post

        def sample(self, x, noise, positions=False):
            """(values [N, D], positions on the u scale [N, D]), both in generation order."""
            c = self.cond(x)
            g = self.group(x)
            u_all = 0.5 * (1.0 + torch.erf(noise * 0.7071067811865476))
            feats, vals, pos_u = [], [], []
            for j, net in enumerate(self.nets):
                h = torch.cat([c] + feats, dim=1) if j else c
                p = torch.softmax(net(h), dim=1)
                cum = p @ self.tri
                u = u_all[:, j:j + 1]
                b = torch.clamp((cum < u).to(torch.float32).sum(dim=1, keepdim=True), max=float(B - 1))
                bl = b.to(torch.long)
                pb = torch.gather(p, 1, bl)
                lower = torch.gather(cum, 1, bl) - pb
                r = torch.clamp((u - lower) / torch.clamp(pb, min=1e-12), 0.0, 1.0)
                z = self.e_lo[bl] + r * self.e_w[bl]
                pos = torch.clamp(b * S + r * S, 0.0, B * S - 1e-3)
                i0 = torch.floor(pos)
                fr = pos - i0
                idx = (g[:, None] * (D * K) + j * K) + i0.to(torch.long)
                lo = self.tab_flat[idx]
                v = lo + fr * (self.tab_flat[idx + 1] - lo)
                vals.append(v)
                if positions:
                    pos_u.append(self.u_lo[bl] + r.to(torch.float64) * self.u_w[bl])
                a = v / 5.0
                feats += [z, torch.sign(a) * torch.log(torch.abs(a) + torch.sqrt(a * a + 1.0))]
            return torch.cat(vals, dim=1), (torch.cat(pos_u, dim=1) if positions else None)

    return ARRich()
