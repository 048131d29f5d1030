"""Shared code of the generative tracking models (resolution, covariance): conditional
normalising flows trained by maximum likelihood with PyTorch (CPU) and exported to ONNX in their
*sampling* direction (noise -> data, no random op in the graph).

Model in one picture (sampling direction, everything below is inside the ONNX graph)::

    x [N, n_in] --(robust scaling + asinh)--> c --MLP--> e (condition embedding, once)
    noise [N, d] --(conditional elementwise affine(e))--> (K affine couplings: h = act(A half + E_k e),
        one hidden layer by default, then (log-scale, shift) of the other half; learned invertible
        linear mixing after each)--> u   (Gaussianised targets)
    u --(inverse marginal quantile transform of the row's table group: track type x log10 p bin)--> t
    t --(* scale(log10 p, type) + loc(log10 p, type), :class:`MomentumScale`)--> t
    t --(model-specific post-processing, e.g. dp = (dp/p) * p, CPC -> correlations)--> y

* Marginal Gaussianisation: for every target column the training sample's quantiles at
  Gaussian levels g_k = -G..G (uniform grid) are stored; the graph maps u -> t by linear
  interpolation between (g_k, q_k) with a uniform grid, so the bin index is arithmetic
  (floor) and the lookup one Gather of (q_k, q_{k+1} - q_k) rows: cheap, exact inverse of the
  training-time transform, and bounded by the training sample's range (no absurd extrapolation).
  After training the tables are recalibrated on the flow's own marginals
  (:meth:`Gaussianizer.calibrate`, :func:`calibrate_flow`): generated marginals per table group
  equal the training sample's, at no inference cost.
* Affine couplings with soft-clamped log-scales; the last layer of each coupling MLP is
  zero-initialised (the flow starts at the identity).

torch is imported here only: runtime code never imports this module.
"""
from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_INPUT",
    "REPO",
    "load_tree",
    "split_indices",
    "Gaussianizer",
    "track_type_group",
    "table_group",
    "slope_sq",
    "MomentumScale",
    "ConditionScaler",
    "DerivedConditions",
    "train_regression",
    "regression_loc_scale",
    "build_flow",
    "sample_u_numpy",
    "calibrate_flow",
    "train_flow",
    "export_onnx",
    "OnnxSampler",
    "time_model",
    "ks_per_output",
    "auc_in_p_bins",
    "auc_in_p_bins_draws",
    "sha256_of",
    "write_card",
]

REPO = Path(__file__).resolve().parents[3]
DEFAULT_INPUT = REPO / ".." / "shared" / "data" / "lhcb_trk2016_samples.root"
#: fixed seed of the train/validation split shared by the resolution and covariance scripts
SPLIT_SEED = 20160128
VALIDATION_FRACTION = 0.2


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def load_tree(path, tree="Resolution") -> dict:
    import uproot

    with uproot.open(str(path)) as f:
        return {k: np.asarray(v) for k, v in f[tree].arrays(library="np").items()}


def split_indices(n: int, seed: int = SPLIT_SEED, fraction: float = VALIDATION_FRACTION):
    """(train, validation) row indices: a fixed random permutation (same for both models)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ----------------------------------------------------------------------------------------------
# preprocessing
# ----------------------------------------------------------------------------------------------
class Gaussianizer:
    """Marginal quantile transform to N(0,1) on a uniform grid of Gaussian levels, with one table
    per group of rows (e.g. per track type: the graph picks the table from the type flags)."""

    def __init__(self, n_knots: int = 241, g_max: float = 5.0):
        self.g = np.linspace(-g_max, g_max, n_knots)
        self.g_max = g_max
        self.q = None  # [G, D, K]

    @staticmethod
    def _table(t, levels):
        q = np.quantile(t, levels, axis=0).T  # [D, K]
        # strictly increasing knots (ties from discrete values / float32 rounding)
        span = np.maximum(q[:, -1] - q[:, 0], 1e-30)
        eps = span * 1e-7
        for k in range(1, q.shape[1]):
            q[:, k] = np.maximum(q[:, k], q[:, k - 1] + eps)
        return q

    def fit(self, t: np.ndarray, groups=None, n_groups: int = 1, n_sub: int = 1, min_rows: int = 400,
            n_p: int | None = None):
        """One table per group.  ``n_sub`` > 1: groups ``k`` are sub-groups of the coarse group
        ``k // n_sub`` (e.g. slope bins of a track type x momentum bin); a sub-group with fewer than
        ``min_rows`` rows gets the table of its whole coarse group -- or, with ``n_p`` (the number of
        momentum bins per track type: coarse group = type * n_p + p bin), of the same sub-group in the
        nearest momentum bins of its track type (the window of p bins widened symmetrically until it
        holds ``min_rows`` rows; the whole coarse group if even all p bins of the type do not).  The
        slope shapes (e.g. the nDoF of tracks at large polar angle) then come from tracks at that angle."""
        from scipy.special import ndtr

        t = np.asarray(t, dtype=np.float64)
        groups = np.zeros(len(t), np.int64) if groups is None else np.asarray(groups, np.int64)
        levels = ndtr(self.g)
        self.n_sub, self.min_rows, self.n_p = n_sub, min_rows, n_p
        self.members = self._members(np.bincount(groups, minlength=n_groups), n_groups)
        tabs = []
        for k in range(n_groups):
            m = np.isin(groups, self.members[k])
            tabs.append(self._table(t[m], levels) if m.any() else np.tile(levels, (t.shape[1], 1)))
        self.q = np.stack(tabs)
        return self

    def _members(self, counts, n_groups):
        """Per table: the group indices whose rows it is fitted (and recalibrated) on."""
        n_sub, min_rows, n_p = self.n_sub, self.min_rows, self.n_p
        out = []
        for k in range(n_groups):
            if n_sub <= 1 or counts[k] >= min_rows:
                out.append(np.array([k]))
                continue
            coarse, sub = divmod(k, n_sub)
            ids = None
            if n_p:
                typ, pb = divmod(coarse, n_p)
                for r in range(1, n_p):
                    bins = np.arange(max(pb - r, 0), min(pb + r, n_p - 1) + 1)
                    cand = (typ * n_p + bins) * n_sub + sub
                    if counts[cand].sum() >= min_rows:
                        ids = cand
                        break
            out.append(ids if ids is not None else coarse * n_sub + np.arange(n_sub))
        return out

    def forward(self, t, groups=None):
        t = np.asarray(t, dtype=np.float64)
        groups = np.zeros(len(t), np.int64) if groups is None else np.asarray(groups, np.int64)
        out = np.empty_like(t)
        for k in range(self.q.shape[0]):
            m = groups == k
            for i in range(t.shape[1]):
                out[m, i] = np.interp(t[m, i], self.q[k, i], self.g)
        return out


    def calibrate(self, t, groups, u_gen, groups_gen):
        """Post-training marginal recalibration (quantile mapping), in place.

        The flow's generated ``u`` (``u_gen``, sampled on the *training* conditions) has marginals
        F_gen that are close to, but not exactly N(0,1) (e.g. a few % too peaked).  Replacing the
        table q_k = Q_t(Phi(g_k)) by q_k = Q_t(F_gen(g_k)) makes the generated marginal of ``t``
        per group equal to the training sample's (t = Q_t(F_gen(u))), at no inference cost: same
        grid, same graph.  Returns the largest |F_gen(g_k) - Phi(g_k)| (diagnostic)."""
        from scipy.special import ndtr

        t = np.asarray(t, dtype=np.float64)
        groups = np.asarray(groups, np.int64)
        groups_gen = np.asarray(groups_gen, np.int64)
        worst = 0.0
        for k in range(self.q.shape[0]):
            # sparse sub-groups are calibrated on the rows they were fitted on
            mk, mg = np.isin(groups, self.members[k]), np.isin(groups_gen, self.members[k])
            tk, uk = t[mk], np.sort(np.asarray(u_gen, dtype=np.float64)[mg], axis=0)
            if len(tk) == 0 or len(uk) == 0:
                continue
            levels = np.empty((t.shape[1], len(self.g)))
            for c in range(t.shape[1]):
                # mid-rank empirical CDF of the generated u at the grid levels
                lo = np.searchsorted(uk[:, c], self.g, side="left")
                hi = np.searchsorted(uk[:, c], self.g, side="right")
                levels[c] = (0.5 * (lo + hi) + 0.5) / (len(uk) + 1.0)
                worst = max(worst, float(np.max(np.abs(levels[c] - ndtr(self.g)))))
            q = np.stack([np.quantile(tk[:, c], levels[c]) for c in range(t.shape[1])])
            span = np.maximum(q[:, -1] - q[:, 0], 1e-30)
            for j in range(1, q.shape[1]):
                q[:, j] = np.maximum(q[:, j], q[:, j - 1] + span * 1e-7)
            self.q[k] = q
        return worst

    def graph_table(self):
        """[G * D * K, 2] float32 rows (q_k, q_{k+1} - q_k): one Gather per output value."""
        nxt = np.minimum(np.arange(self.q.shape[2]) + 1, self.q.shape[2] - 1)
        tab = np.stack([self.q, self.q[:, :, nxt] - self.q], axis=-1)
        return tab.reshape(-1, 2).astype(np.float32)


def track_type_group(x):
    """Group index of the per-track-type tables from the flags is_upstream (col 10) and
    is_downstream (col 11) of the tracking model inputs: 0 long, 1 upstream, 2 downstream."""
    x = np.asarray(x)
    return (x[:, 10] > 0.5).astype(np.int64) + 2 * (x[:, 11] > 0.5).astype(np.int64)


def slope_sq(x):
    """tx^2 + ty^2 (float32, the graph's arithmetic) from the tracking model inputs (columns 3, 4)."""
    x = np.asarray(x)
    tx, ty = x[:, 3].astype(np.float32), x[:, 4].astype(np.float32)
    return tx * tx + ty * ty


def table_group(x, p_edges=(), log10p_column: int = 5, theta_edges=()):
    """Group index of the quantile tables: track type x momentum bin (``p_edges``: inner edges in
    log10(p/MeV); none = per track type only) x polar-slope bin (``theta_edges``: inner edges of
    sqrt(tx^2 + ty^2)), ``(type * (len(p_edges) + 1) + pbin) * (len(theta_edges) + 1) + thbin`` --
    the graph's arithmetic (comparisons summed), so rows exactly on an edge agree."""
    x = np.asarray(x)
    lp = x[:, log10p_column].astype(np.float32)
    pbin = sum((lp >= np.float32(e)).astype(np.int64) for e in p_edges) if p_edges else 0
    g = track_type_group(x) * (len(p_edges) + 1) + pbin
    if theta_edges:
        t2 = slope_sq(x)
        g = g * (len(theta_edges) + 1) + sum((t2 >= np.float32(e) * np.float32(e)).astype(np.int64)
                                             for e in theta_edges)
    return g


def _knot_position(log10_p, lo, hi, n_knots):
    """(i0, frac) of the piecewise-linear interpolation on a uniform knot grid, clamped to the grid:
    the *same* arithmetic as the graph (bin index by floor, so the lookup is a Gather)."""
    inv = (n_knots - 1) / (hi - lo)
    pos = np.clip((np.asarray(log10_p, dtype=np.float64) - lo) * inv, 0.0, n_knots - 1 - 1e-3)
    i0 = np.floor(pos).astype(np.int64)
    return i0, pos - i0


class MomentumScale:
    """Per-track-type, momentum-dependent robust location and scale of the targets: median and
    1.4826 MAD in knots of log10 p, linearly interpolated.  The flow models
    ``(t - loc(log10 p, type)) / scale(log10 p, type)``, whose conditional shapes are much closer to
    one another than those of ``t`` (resolutions scale ~ 1/p; the covariance's q/p correlations
    change their width 40-fold with p).  Columns not in ``columns`` get loc 0, scale 1; ``center``
    False keeps loc 0 everywhere.  The graph undoes it with one Gather of a [type x knot, 4 D] table
    (loc, d loc, scale, d scale) per row."""

    def __init__(self, columns, lo=2.0, hi=5.8, n_knots=20, min_count=200, center=True):
        self.columns = list(columns)
        self.lo, self.hi, self.n_knots, self.min_count, self.center = lo, hi, n_knots, min_count, center
        self.knots = np.linspace(lo, hi, n_knots)

    def fit(self, t, log10_p, groups, n_groups=3):
        t = np.asarray(t, dtype=np.float64)
        d = t.shape[1]
        loc = np.zeros((n_groups, d, self.n_knots))
        scale = np.ones((n_groups, d, self.n_knots))
        half = 0.5 * (self.knots[1] - self.knots[0])
        for g in range(n_groups):
            mg = groups == g
            for c in self.columns:
                m_k, s_k = np.full(self.n_knots, np.nan), np.full(self.n_knots, np.nan)
                for k, centre in enumerate(self.knots):
                    m = mg & (np.abs(log10_p - centre) <= half * 1.5)
                    if m.sum() >= self.min_count:
                        v = t[m, c]
                        med = np.median(v)
                        m_k[k] = med if self.center else 0.0
                        s_k[k] = max(1.4826 * np.median(np.abs(v - med)), 1e-30)
                ok = np.isfinite(s_k)
                if not ok.any():
                    continue
                # nearest valid knot at the edges; scales interpolated in log (positive)
                loc[g, c] = np.interp(self.knots, self.knots[ok], m_k[ok])
                scale[g, c] = np.exp(np.interp(self.knots, self.knots[ok], np.log(s_k[ok])))
        self.loc, self.scale_knots = loc, scale
        return self

    def loc_scale(self, log10_p, groups):
        """(loc, scale) [N, D] as the graph computes them."""
        i0, frac = _knot_position(log10_p, self.lo, self.hi, self.n_knots)
        groups = np.asarray(groups, dtype=np.int64)
        f = frac[:, None]
        loc = self.loc[groups, :, i0] + f * (self.loc[groups, :, i0 + 1] - self.loc[groups, :, i0])
        sc = self.scale_knots[groups, :, i0] + f * (self.scale_knots[groups, :, i0 + 1] - self.scale_knots[groups, :, i0])
        return loc, sc

    def transform(self, t, log10_p, groups):
        loc, sc = self.loc_scale(log10_p, groups)
        return (np.asarray(t, dtype=np.float64) - loc) / sc

    def graph_table(self):
        """[G * K, 4 D] float32: per (group, knot) row: loc_k, loc_{k+1} - loc_k, s_k, s_{k+1} - s_k."""
        G_, D, K = self.loc.shape
        nxt = np.minimum(np.arange(K) + 1, K - 1)
        parts = [self.loc, self.loc[:, :, nxt] - self.loc, self.scale_knots,
                 self.scale_knots[:, :, nxt] - self.scale_knots]
        tab = np.concatenate([p.transpose(0, 2, 1) for p in parts], axis=2)  # [G, K, 4D]
        return tab.reshape(G_ * K, 4 * D).astype(np.float32)


class DerivedConditions:
    """Extra condition features computed inside the graph from the raw tracking inputs (columns 3, 4 =
    tx, ty): log(theta + 1e-3), log(|tx| + 1e-3), log(|ty| + 1e-3) with theta = sqrt(tx^2 + ty^2) --
    the reference's fit quality and covariances change sharply near the beam pipe (theta < 0.03) and
    along the cross-shaped inner tracker (small |tx| or |ty|), which asinh-scaled slopes resolve
    poorly.  Standardised with the training sample's mean and std."""

    n = 3
    EPS = 1e-3

    @classmethod
    def numpy(cls, x):
        x = np.asarray(x, dtype=np.float32)
        tx, ty = x[:, 3], x[:, 4]
        th = np.sqrt(tx * tx + ty * ty)
        return np.stack([np.log(th + cls.EPS), np.log(np.abs(tx) + cls.EPS), np.log(np.abs(ty) + cls.EPS)], axis=1)

    def fit(self, x):
        v = self.numpy(x).astype(np.float64)
        self.loc, self.scale = v.mean(axis=0), np.maximum(v.std(axis=0), 1e-6)
        return self

    def torch(self, x):
        import torch

        tx, ty = x[:, 3:4], x[:, 4:5]
        th = torch.sqrt(tx * tx + ty * ty)
        return torch.log(torch.cat([th, torch.abs(tx), torch.abs(ty)], dim=1) + self.EPS)


class ConditionScaler:
    """c = asinh((x - median) / robust_sigma) for continuous columns; flags untouched."""

    def __init__(self, flag_columns=()):
        self.flag_columns = set(flag_columns)

    def fit(self, x):
        x = np.asarray(x, dtype=np.float64)
        med = np.median(x, axis=0)
        q25, q75 = np.percentile(x, [25, 75], axis=0)
        sig = np.maximum((q75 - q25) / 1.349, 1e-12)
        self.loc = np.where([i in self.flag_columns for i in range(x.shape[1])], 0.0, med)
        self.scale = np.where([i in self.flag_columns for i in range(x.shape[1])], 1.0, sig)
        self.squash = np.array([i not in self.flag_columns for i in range(x.shape[1])])
        return self


# ----------------------------------------------------------------------------------------------
# the flow (torch)
# ----------------------------------------------------------------------------------------------
def build_flow(n_cond: int, dim: int, scaler: ConditionScaler, gauss: Gaussianizer,
               n_layers: int = 6, hidden: int = 48, embed: int = 16, postprocess=None, seed: int = 0,
               mscale: "MomentumScale | None" = None, log10p_column: int = 5, depth: int = 1,
               activation: str = "silu", embed_hidden: int | None = None, p_edges=(), theta_edges=(),
               derived: "DerivedConditions | None" = None, embed_layers: int = 1,
               residual_columns=None, reg_hidden: int = 64, residual_types=(0, 1, 2)):
    """The conditional flow as a torch module with ``log_prob(u, x)`` (training) and
    ``forward(x, noise)`` (sampling: the exported graph).

    Layout chosen for inference cost (every op of the graph is run on ~10^4-row batches):

    * the conditions are embedded once (MLP ``n_cond -> embed_hidden -> embed``), which feeds the
      base affine (s, t) and the condition term ``c_l = E_l e`` of every coupling (the C input of
      the coupling's first Gemm: no Concat/Split of wide tensors);
    * each coupling: ``h = act(A a + c_l)`` (``depth`` hidden layers of width ``hidden``), then the
      (log-scale, shift) of the other half; a learned invertible linear mixing (Glow-style
      P L U, frozen to one small MatMul at export) follows;
    * ``derived``: extra condition features computed in the graph from the raw inputs (e.g. the polar
      slope) appended to the scaled conditions; ``embed_layers`` hidden layers in the embedding MLP;
    * ``residual_columns``: deterministic-plus-residual parametrisation -- a regression MLP
      (``reg``, trained first by :func:`train_regression`, then frozen) gives a conditional location
      mu(x) and scale sigma(x) of those (normalised) targets; the quantile tables and the flow model
      r = (t - mu) / sigma (the graph: t = r sigma + mu after the inverse quantile transform);
      ``residual_types``: the track types (0 long, 1 upstream, 2 downstream, from the flags in the
      conditions) the head applies to -- mu = 0, sigma = 1 for the others;
    * inverse quantile table and momentum loc/scale tables are read with one Gather each (paired
      rows: value and slope)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    act = {"silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh}[activation]
    embed_hidden = embed_hidden or hidden
    half = dim // 2

    class Coupling(nn.Module):
        def __init__(self, flip, perm):
            super().__init__()
            self.flip = flip
            na, nb = (dim - half, half) if not flip else (half, dim - half)
            self.na, self.nb = na, nb
            self.lin_a = nn.Linear(na, hidden, bias=False)
            self.lin_e = nn.Linear(embed, hidden)  # condition term (Gemm C input of lin_a at export)
            mid = []
            for _ in range(depth - 1):
                mid += [nn.Linear(hidden, hidden), act()]
            self.mid = nn.Sequential(*mid)
            self.act = act()
            self.out = nn.Linear(hidden, 2 * nb)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
            P = np.eye(dim, dtype=np.float32)[perm]
            self.register_buffer("P", torch.as_tensor(P))
            self.L = nn.Parameter(torch.zeros(dim, dim))
            self.U = nn.Parameter(torch.zeros(dim, dim))
            self.log_d = nn.Parameter(torch.zeros(dim))
            self.register_buffer("tril", torch.tril(torch.ones(dim, dim), -1))

        def W(self):
            eye = torch.eye(dim, device=self.L.device)
            L = self.L * self.tril + eye
            U = self.U * self.tril.T + torch.diag(torch.exp(self.log_d))
            return self.P @ L @ U

        def st(self, a, e):
            h = self.out(self.mid(self.act(torch.addmm(self.lin_e(e), a, self.lin_a.weight.T))))
            s, t = h[:, : self.nb], h[:, self.nb:]
            return 3.0 * torch.tanh(s / 3.0), t

        def split(self, z):
            if self.flip:
                return z[:, self.nb:], z[:, : self.nb]
            return z[:, : self.na], z[:, self.na:]

        def join(self, a, b):
            return torch.cat([b, a], dim=1) if self.flip else torch.cat([a, b], dim=1)

        def freeze(self):  # constant mixing matrix for export
            self.register_buffer("W_T", self.W().detach().T.contiguous())

        def sample(self, z, c):  # noise side -> data side
            a, b = self.split(z)
            s, t = self.st(a, c)
            z = self.join(a, b * torch.exp(s) + t)
            W_T = self.W_T if hasattr(self, "W_T") else self.W().T
            return z @ W_T

        def inverse(self, u, c):  # data side -> noise side, with log|det d(noise)/d(data)|
            W = self.W()
            z = torch.linalg.solve(W, u.T).T
            a, b = self.split(z)
            s, t = self.st(a, c)
            z = self.join(a, (b - t) * torch.exp(-s))
            return z, -s.sum(dim=1) - self.log_d.sum()

    rng = np.random.default_rng(seed + 1)
    specs = [(k % 2 == 1, rng.permutation(dim)) for k in range(n_layers)]

    class Flow(nn.Module):
        def __init__(self):
            super().__init__()
            f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
            self.register_buffer("c_loc", f32(scaler.loc))
            self.register_buffer("c_scale", f32(scaler.scale))
            self.register_buffer("c_squash", f32(scaler.squash.astype(np.float32)))
            self.derived = derived
            if derived is not None:
                self.register_buffer("d_loc", f32(derived.loc))
                self.register_buffer("d_scale", f32(derived.scale))
            n_c = n_cond + (derived.n if derived is not None else 0)
            emb = [nn.Linear(n_c, embed_hidden), act()]
            for _ in range(embed_layers - 1):
                emb += [nn.Linear(embed_hidden, embed_hidden), act()]
            self.embed = nn.Sequential(*emb, nn.Linear(embed_hidden, embed), act())
            self.has_reg = residual_columns is not None
            if self.has_reg:
                mask = np.zeros(dim, np.float32)
                mask[list(residual_columns)] = 1.0
                self.register_buffer("reg_mask", f32(mask))
                self.reg = nn.Sequential(nn.Linear(n_c, reg_hidden), act(), nn.Linear(reg_hidden, 2 * dim))
                # only the rows of the residual columns of the head's output layer are evaluated (the graph: a
                # Gemm to 2 R outputs, then a [R, D] selection MatMul, instead of a Gemm to 2 D outputs and masks)
                cols = sorted(int(k) for k in residual_columns)
                self.n_reg = len(cols)
                self.register_buffer("reg_rows", torch.as_tensor(cols + [dim + k for k in cols], dtype=torch.long))
                sel = np.zeros((len(cols), dim), np.float32)
                sel[np.arange(len(cols)), cols] = 1.0
                self.register_buffer("reg_sel", f32(sel))
                keep = np.zeros(3, np.float32)
                keep[list(residual_types)] = 1.0
                # per-track-type switch of the head (None: all types, no extra op in the graph)
                self.register_buffer("reg_type_keep", None if keep.all() else f32(keep))
            self.base = nn.Linear(embed, 2 * dim)
            nn.init.zeros_(self.base.weight)  # base affine starts at the identity
            nn.init.zeros_(self.base.bias)
            self.layers = nn.ModuleList([Coupling(flip, perm) for flip, perm in specs])
            # inverse Gaussianisation: rows (q_k, q_{k+1} - q_k)
            self.register_buffer("q_pair", f32(gauss.graph_table()))
            self.n_groups = gauss.q.shape[0]
            self.theta_edges = tuple(float(e) for e in theta_edges)
            self.K = gauss.q.shape[2]
            self.DK = dim * self.K
            self.g0 = float(gauss.g[0])
            self.inv_dg = float((self.K - 1) / (gauss.g[-1] - gauss.g[0]))
            self.register_buffer("col_off", torch.arange(dim, dtype=torch.long) * self.K)
            self.dim = dim
            self.p_edges = tuple(float(e) for e in p_edges)
            self.register_buffer("type_weights", torch.as_tensor([[1, 2]], dtype=torch.long))
            self.register_buffer("p_edge_values", torch.as_tensor([self.p_edges or (0.0,)], dtype=torch.float32))
            self.register_buffer("theta_edge_sq", torch.as_tensor(
                [[float(np.float32(e) * np.float32(e)) for e in self.theta_edges] or [0.0]], dtype=torch.float32))
            self.log10p_column = log10p_column
            assert self.n_groups == 3 * (len(self.p_edges) + 1) * (len(self.theta_edges) + 1), \
                "quantile tables: one per track type x p bin x slope bin"
            self.postprocess = postprocess
            self.has_mscale = mscale is not None
            if self.has_mscale:
                self.register_buffer("ls_table", f32(mscale.graph_table()))
                self.ms_nk = mscale.n_knots
                self.ms_lo = float(mscale.lo)
                self.ms_inv_dl = float((mscale.n_knots - 1) / (mscale.hi - mscale.lo))
                self.log10p_column = log10p_column

        def set_gauss(self, gauss_):
            self.q_pair.copy_(torch.as_tensor(gauss_.graph_table()))

        def features(self, x):
            c = (x - self.c_loc) / self.c_scale
            a = torch.abs(c)  # asinh, written with ONNX-exportable ops
            ash = torch.sign(c) * torch.log(a + torch.sqrt(a * a + 1.0))
            c = self.c_squash * ash + (1.0 - self.c_squash) * c
            if self.derived is not None:
                c = torch.cat([c, (self.derived.torch(x) - self.d_loc) / self.d_scale], dim=1)
            return c

        def reg_loc_scale(self, c, grp=None):
            """Conditional (mu, sigma) of the residual columns (0, 1 elsewhere, and for the track types the
            head does not apply to); ``grp``: the rows' track-type group (default: from the flags in ``c``,
            which the condition scaling leaves untouched)."""
            out = self.reg[2]
            h = torch.nn.functional.linear(self.reg[1](self.reg[0](c)), out.weight[self.reg_rows],
                                           out.bias[self.reg_rows])
            mu, log_s = h[:, : self.n_reg], 3.0 * torch.tanh(h[:, self.n_reg:] / 3.0)
            if self.reg_type_keep is not None:
                keep = self.reg_type_keep[self.group(c) if grp is None else grp]
                mu, log_s = mu * keep, log_s * keep
            return mu @ self.reg_sel, torch.exp(log_s @ self.reg_sel)

        def cond(self, x, c=None):
            c = self.features(x) if c is None else c
            e = self.embed(c)
            h = self.base(e)
            return 3.0 * torch.tanh(h[:, : self.dim] / 3.0), h[:, self.dim:], e

        def log_prob(self, u, x):
            s, t, e = self.cond(x)
            z = u
            logdet = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
            for layer in reversed(self.layers):
                z, ld = layer.inverse(z, e)
                logdet = logdet + ld
            z = (z - t) * torch.exp(-s)
            logdet = logdet - s.sum(dim=1)
            return -0.5 * (z * z).sum(dim=1) - 0.5 * self.dim * math.log(2 * math.pi) + logdet

        def sample_u(self, x, noise, c=None):
            s, t, e = self.cond(x, c)
            z = noise * torch.exp(s) + t
            for layer in self.layers:
                z = layer.sample(z, e)
            return z

        def group(self, x):  # is_upstream + 2 is_downstream (one compare, one weighted sum in the graph)
            return ((x[:, 10:12] > 0.5).to(torch.long) * self.type_weights).sum(dim=1, keepdim=True)

        def table_group(self, x, tgrp):
            g = tgrp
            # bins: the float32 comparisons with all edges at once (one broadcast compare, one sum)
            if self.p_edges:
                lp = x[:, self.log10p_column:self.log10p_column + 1]
                pbin = (lp >= self.p_edge_values).to(torch.long).sum(dim=1, keepdim=True)
                g = g * (len(self.p_edges) + 1) + pbin
            if self.theta_edges:
                t2 = x[:, 3:4] * x[:, 3:4] + x[:, 4:5] * x[:, 4:5]
                tbin = (t2 >= self.theta_edge_sq).to(torch.long).sum(dim=1, keepdim=True)
                g = g * (len(self.theta_edges) + 1) + tbin
            return g

        def ungauss(self, u, grp):
            pos = (u - self.g0) * self.inv_dg
            pos = torch.clamp(pos, 0.0, float(self.K - 1) - 1e-3)
            i0 = torch.floor(pos)
            frac = pos - i0
            idx = i0.to(torch.long) + self.col_off
            if self.n_groups > 1:  # per-track-type tables (flags is_upstream, is_downstream)
                idx = idx + grp * self.DK
            tab = self.q_pair[idx]  # [N, D, 2]
            return tab[:, :, 0] + frac * tab[:, :, 1]

        def loc_scale(self, x, grp):
            lp = x[:, self.log10p_column:self.log10p_column + 1]
            pos = torch.clamp((lp - self.ms_lo) * self.ms_inv_dl, 0.0, float(self.ms_nk - 1) - 1e-3)
            i0 = torch.floor(pos)
            frac = pos - i0
            row = (i0.to(torch.long) + grp * self.ms_nk)[:, 0]
            loc0, dloc, s0, ds = torch.split(self.ls_table[row], self.dim, dim=1)
            return loc0 + frac * dloc, s0 + frac * ds

        def forward(self, x, noise):
            tgrp = self.group(x)
            c = self.features(x)
            t = self.ungauss(self.sample_u(x, noise, c), self.table_group(x, tgrp))
            if self.has_reg:
                mu, sig = self.reg_loc_scale(c, tgrp)
                t = t * sig + mu
            if self.has_mscale:
                loc, sc = self.loc_scale(x, tgrp)
                t = t * sc + loc
            if self.postprocess is not None:
                t = self.postprocess(x, t)
            return t

    return Flow()


def sample_u_numpy(flow, x, noise, chunk=65536):
    """The flow's Gaussianised sample u (before the inverse quantile tables), float64 numpy."""
    import torch

    out = []
    flow.eval()
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            out.append(flow.sample_u(torch.as_tensor(np.asarray(x[i:i + chunk], np.float32)),
                                     torch.as_tensor(np.asarray(noise[i:i + chunk], np.float32))).double().numpy())
    return np.concatenate(out)


def calibrate_flow(flow, gauss: Gaussianizer, x, t_norm, groups, n_draws: int = 2, seed: int = 77) -> float:
    """Marginal recalibration of a trained flow (see :meth:`Gaussianizer.calibrate`) on the training
    rows ``x`` / normalised targets ``t_norm``: ``n_draws`` noise draws per row.  Updates ``gauss``
    and the flow's table in place; returns the largest |F_gen - Phi| before calibration."""
    rng = np.random.default_rng(seed)
    xs = np.concatenate([x] * n_draws)
    noise = rng.standard_normal((len(xs), flow.dim)).astype(np.float32)
    u = sample_u_numpy(flow, xs, noise)
    worst = gauss.calibrate(t_norm, groups, u, np.concatenate([groups] * n_draws))
    flow.set_gauss(gauss)
    return worst


class TableSetup:
    """What the quantile tables of a model are built on, from the training rows: the momentum loc/scale, the
    rows' track-type group and log10 p, their table group and the table layout (groups, slope sub-groups, the
    momentum bins of the slope fallback).  One place for :func:`fit_model` and :func:`recalibrate_onnx`, so a
    recalibration uses the training's groups by construction."""

    def __init__(self, x, t, tr, *, mscale_columns, p_edges, theta_edges=(), theta_fallback="coarse"):
        self.grp = track_type_group(x)
        self.lp = x[:, 5].astype(np.float64)
        self.mscale = MomentumScale(columns=mscale_columns).fit(t[tr], self.lp[tr], self.grp[tr], n_groups=3)
        self.tgrp = table_group(x, p_edges, theta_edges=theta_edges)
        self.n_sub = len(theta_edges) + 1
        self.n_groups = 3 * (len(p_edges) + 1) * self.n_sub
        self.n_p = len(p_edges) + 1 if theta_fallback == "p-neighbours" else None

    def gaussianizer(self, t_rows, groups):
        """Tables fitted on ``t_rows`` (normalised targets of the rows with table groups ``groups``)."""
        return Gaussianizer().fit(t_rows, groups, n_groups=self.n_groups, n_sub=self.n_sub, n_p=self.n_p)


def recalibrate_onnx(path, x, t, tr, *, p_edges, theta_edges=(), theta_fallback="coarse", mscale_columns=(),
                     unpost=None, n_draws: int = 16, seed: int = 77, chunk: int = 65536, out_path=None) -> dict:
    """The marginal recalibration of :func:`calibrate_flow`, redone on an *exported* flow (``path``, rewritten
    unless ``out_path``): only the quantile tables change, the flow stays as trained.

    ``x``, ``t``: all rows of the training file (model inputs and internal targets, as the training script
    builds them), ``tr``: the training split; ``p_edges``, ``theta_edges``, ``theta_fallback`` and
    ``mscale_columns`` as the model was trained (its card); ``unpost(x, y)``: the inverse of the model's
    post-processing (outputs -> internal targets).  The graph gives what the calibration needs through its
    public output alone, with substitute tables: a table of 0 gives the regression head's mu, a table of 1
    mu + sigma, the identity table u * sigma + mu, i.e. the flow's latent u.  The momentum normalisation, the
    table groups and their members are refitted on the training rows (:class:`TableSetup`, as in
    :func:`fit_model`) and checked against the graph's.  With ``n_draws`` and ``seed`` of the training (2, 77)
    the tables come out as the training made them; more draws lower the statistical noise of F_gen in the
    tails, which a table inherits (2 draws: about 6 % relative at a tail fraction of 1 % in a table group of
    6000 rows).  Returns a summary for the card."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = {i.name: i for i in model.graph.initializer}
    if "q_pair" not in init or "ls_table" not in init:
        raise ValueError(f"{path}: not a flow exported by models.training.tracking.generative (no q_pair/ls_table)")
    q_old = numpy_helper.to_array(init["q_pair"]).copy()
    t = np.asarray(t, dtype=np.float64)
    dim = t.shape[1]
    n_knots = len(Gaussianizer().g)
    if q_old.shape[0] % (dim * n_knots):
        raise ValueError(f"{path}: table of {q_old.shape[0]} rows is not groups x {dim} outputs x {n_knots} knots")
    n_groups = q_old.shape[0] // (dim * n_knots)
    setup = TableSetup(x, t, tr, mscale_columns=mscale_columns, p_edges=p_edges, theta_edges=theta_edges,
                       theta_fallback=theta_fallback)
    mscale, lp, grp, tgrp = setup.mscale, setup.lp, setup.grp, setup.tgrp
    if not np.array_equal(mscale.graph_table(), numpy_helper.to_array(init["ls_table"])):
        raise ValueError(f"{path}: its momentum normalisation is not the one of these training rows "
                         "(another input file, split or target definition than the model's)")
    if n_groups != setup.n_groups:
        raise ValueError(f"{path}: {n_groups} table groups, but p_edges/theta_edges give {setup.n_groups}")
    xt = np.asarray(x[tr], np.float32)

    def session(table):
        init["q_pair"].CopyFrom(numpy_helper.from_array(np.asarray(table, np.float32), "q_pair"))
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def before_table_scale(sess, noise):
        """(u * sigma + mu) of the training rows: the graph's output with the loc/scale and post-processing undone."""
        out = np.empty((len(xt), dim))
        for i in range(0, len(xt), chunk):
            y = sess.run(None, {"x": xt[i:i + chunk], "noise": noise[i:i + chunk]})[0].astype(np.float64)
            y = unpost(xt[i:i + chunk], y) if unpost is not None else y
            out[i:i + chunk] = mscale.transform(y, lp[tr][i:i + chunk], grp[tr][i:i + chunk])
        return out

    zeros = np.zeros((len(xt), dim), np.float32)
    tab = np.zeros_like(q_old)
    mu = before_table_scale(session(tab), zeros)
    tab[:, 0] = 1.0
    sig = before_table_scale(session(tab), zeros) - mu
    # the identity table, with end segments steep enough that a latent beyond the grid (which the graph
    # clamps) comes back beyond it: the calibration counts it there, as on the flow's own latent
    knots = np.linspace(-Gaussianizer().g_max, Gaussianizer().g_max, n_knots)
    knots[0], knots[-1] = knots[0] - 1e3, knots[-1] + 1e3
    ident = np.zeros((n_groups, dim, n_knots, 2))
    ident[..., 0] = knots
    ident[..., 1] = np.append(np.diff(knots), 0.0)
    sess = session(ident.reshape(-1, 2))
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n_draws * len(xt), dim)).astype(np.float32)   # as calibrate_flow draws it
    u = np.concatenate([(before_table_scale(sess, noise[k * len(xt):(k + 1) * len(xt)]) - mu) / sig
                        for k in range(n_draws)])
    r = (mscale.transform(t[tr], lp[tr], grp[tr]) - mu) / sig
    gauss = setup.gaussianizer(r, tgrp[tr])
    worst = gauss.calibrate(r, tgrp[tr], u, np.concatenate([tgrp[tr]] * n_draws))
    q_new = gauss.graph_table()
    init["q_pair"].CopyFrom(numpy_helper.from_array(q_new, "q_pair"))
    onnx.save(model, str(out_path or path))
    return {"draws": int(n_draws), "seed": int(seed), "max_cdf_shift": round(float(worst), 5),
            "rows": int(len(xt))}


def regression_loc_scale(flow, x, chunk=65536):
    """(mu, sigma) float64 numpy of a flow's regression head (deterministic-plus-residual models)."""
    import torch

    mus, sigs = [], []
    flow.eval()
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            mu, sig = flow.reg_loc_scale(flow.features(torch.as_tensor(np.asarray(x[i:i + chunk], np.float32))))
            mus.append(mu.double().numpy())
            sigs.append(sig.double().numpy())
    return np.concatenate(mus), np.concatenate(sigs)


#: NLLs of the regression head (``--reg-loss``); z = (t - mu) / sigma, per residual column, constants dropped
REG_LOSSES = ("gaussian", "student", "laplace")


def train_regression(flow, x_train, t_train, x_val, t_val, *, max_seconds=120.0, batch_size=4096, lr=3e-3,
                     threads=1, seed=0, loss="gaussian", nu=4.0, clip=8.0, device="cpu", log=print):
    """Stage 1 of the deterministic-plus-residual parametrisation: fit the flow's regression head
    (conditional location mu and scale sigma of the residual columns of the normalised targets) by
    maximum likelihood -- after clipping the targets at +-``clip`` so the reference's rare outliers do not
    drive it -- then freeze it.  ``loss``: 'gaussian' (sigma = the conditional rms, tails included), 'student'
    (Student-t with ``nu`` degrees of freedom: sigma follows the core, the tails are left to the residual
    r = (t - mu) / sigma) or 'laplace' (sigma = mean |t - mu|).  ``device``: the torch device to train on (the
    flow is moved back to the CPU at the end).  Returns a dict of training figures."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    flow.to(device)
    xt = torch.as_tensor(np.asarray(x_train, np.float32), device=device)
    tt = torch.as_tensor(np.clip(np.asarray(t_train, np.float64), -clip, clip).astype(np.float32), device=device)
    xv = torch.as_tensor(np.asarray(x_val, np.float32), device=device)
    tv = torch.as_tensor(np.clip(np.asarray(t_val, np.float64), -clip, clip).astype(np.float32), device=device)
    params = list(flow.reg.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    n = xt.shape[0]
    gen = torch.Generator().manual_seed(seed)
    mask = flow.reg_mask

    if loss not in REG_LOSSES:
        raise ValueError(f"unknown regression loss {loss!r}")

    def nll(xb, tb):
        mu, sig = flow.reg_loc_scale(flow.features(xb))
        z = (tb - mu) / sig
        if loss == "student":
            pen = 0.5 * (nu + 1.0) * torch.log1p(z * z / nu)
        elif loss == "laplace":
            pen = torch.abs(z)
        else:
            pen = 0.5 * z * z
        return ((pen + torch.log(sig)) * mask).sum(dim=1).mean()

    t0, epoch, best, best_state = time.time(), 0, float("inf"), None
    while time.time() - t0 < max_seconds:
        perm = torch.randperm(n, generator=gen)
        for k in range(max(n // batch_size, 1)):
            frac = min((time.time() - t0) / max_seconds, 1.0)
            for g in opt.param_groups:
                g["lr"] = lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac)))
            idx = perm[k * batch_size:(k + 1) * batch_size].to(device)
            batch_nll = nll(xt[idx], tt[idx])
            opt.zero_grad(set_to_none=True)
            batch_nll.backward()
            opt.step()
        epoch += 1
        with torch.no_grad():
            v = float(nll(xv, tv))
        if v < best:
            best, best_state = v, {k: t.detach().clone() for k, t in flow.reg.state_dict().items()}
        log(f"  regression epoch {epoch:3d}  val nll {v:.4f}  ({time.time() - t0:.0f}s)")
    flow.reg.load_state_dict(best_state)
    flow.to("cpu")
    for prm in params:
        prm.requires_grad_(False)
    return {"regression_epochs": epoch, "regression_seconds": round(time.time() - t0, 1),
            "regression_best_val_nll": round(best, 5)}


def train_flow(flow, x_train, u_train, x_val, u_val, *, max_seconds=600.0, max_epochs=1000,
               batch_size=2048, lr=2e-3, weight_decay=0.0, threads=2, seed=0, device="cpu", log=print):
    """Maximum-likelihood training (AdamW, cosine schedule over the time budget,
    best validation NLL kept) on the torch ``device`` (the flow is moved back to the CPU at the end; the
    batches are the same permutations on any device).  Returns a dict of training figures."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    flow.to(device)
    xt = torch.as_tensor(np.asarray(x_train, dtype=np.float32), device=device)
    ut = torch.as_tensor(np.asarray(u_train, dtype=np.float32), device=device)
    xv = torch.as_tensor(np.asarray(x_val, dtype=np.float32), device=device)
    uv = torch.as_tensor(np.asarray(u_val, dtype=np.float32), device=device)
    opt = torch.optim.AdamW(flow.parameters(), lr=lr, weight_decay=weight_decay)
    n = xt.shape[0]
    steps_per_epoch = max(n // batch_size, 1)
    gen = torch.Generator().manual_seed(seed)

    def val_nll():
        flow.eval()
        with torch.no_grad():
            tot = 0.0
            for i in range(0, xv.shape[0], 32768):
                tot += -flow.log_prob(uv[i:i + 32768], xv[i:i + 32768]).sum().item()
        flow.train()
        return tot / xv.shape[0]

    t0 = time.time()
    best, best_state, history = float("inf"), None, []
    epoch = 0
    # cosine learning-rate schedule over the *time* budget (robust to a shared, busy machine)
    while epoch < max_epochs and time.time() - t0 < max_seconds:
        perm = torch.randperm(n, generator=gen)
        run = 0.0
        for k in range(steps_per_epoch):
            frac = min((time.time() - t0) / max_seconds, 1.0)
            for g in opt.param_groups:
                g["lr"] = lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac)))
            idx = perm[k * batch_size:(k + 1) * batch_size].to(device)
            loss = -flow.log_prob(ut[idx], xt[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(flow.parameters(), 5.0)
            opt.step()
            run += loss.item()
        epoch += 1
        v = val_nll()
        history.append((epoch, run / steps_per_epoch, v))
        if v < best:
            best = v
            best_state = {k: t.detach().clone() for k, t in flow.state_dict().items()}
        log(f"  epoch {epoch:3d}  train nll {run / steps_per_epoch:.4f}  val nll {v:.4f}  "
            f"({time.time() - t0:.0f}s)")
    flow.load_state_dict(best_state)
    flow.to("cpu")
    flow.eval()
    return {"epochs": epoch, "seconds": round(time.time() - t0, 1), "best_val_nll": round(best, 5),
            "final_train_nll": round(history[-1][1], 5)}


def add_model_arguments(ap, *, max_seconds, seed, theta_edges, residual, derived=True, embed_layers=2,
                        residual_types="long,upstream,downstream", reg_loss="gaussian", reg_nu=4.0,
                        reg_clip=8.0, theta_fallback="coarse"):
    """Command-line options shared by train_resolution and train_covariance (defaults: the shipped model's)."""
    import argparse

    ap.add_argument("--max-seconds", type=float, default=max_seconds, help="flow training time budget [s]")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=48)
    ap.add_argument("--embed", type=int, default=16)
    ap.add_argument("--embed-layers", type=int, default=embed_layers, help="hidden layers of the condition-embedding MLP")
    ap.add_argument("--depth", type=int, default=1, help="hidden layers per coupling MLP")
    ap.add_argument("--activation", default="silu", choices=("silu", "relu", "tanh"))
    ap.add_argument("--theta-edges", default=",".join(str(e) for e in theta_edges),
                    help="inner edges of sqrt(tx^2+ty^2) of the quantile tables ('' = none)")
    ap.add_argument("--theta-fallback", default=theta_fallback, choices=("coarse", "p-neighbours"),
                    help="table of a polar-slope sub-group with < 400 training rows: its whole track type x p bin "
                         "('coarse') or the same slope bin in the nearest p bins of its track type ('p-neighbours')")
    ap.add_argument("--derived", action=argparse.BooleanOptionalAction, default=derived,
                    help="derived slope features (DerivedConditions) in the conditions")
    ap.add_argument("--residual", default=residual,
                    help="deterministic-plus-residual parametrisation (regression head) of the targets: 'all', the "
                         "momentum-scaled ones ('scaled'), a comma-separated list of target columns, or 'none'")
    ap.add_argument("--residual-types", default=residual_types,
                    help="track types the regression head applies to (comma-separated long, upstream, downstream; "
                         "mu = 0, sigma = 1 for the others)")
    ap.add_argument("--reg-seconds", type=float, default=150.0, help="regression-head training budget [s]")
    ap.add_argument("--reg-loss", default=reg_loss, choices=REG_LOSSES,
                    help="NLL of the regression head: gaussian (sigma = conditional rms), student (Student-t with "
                         "--reg-nu degrees of freedom: sigma follows the core) or laplace")
    ap.add_argument("--reg-nu", type=float, default=reg_nu, help="degrees of freedom of --reg-loss student")
    ap.add_argument("--reg-clip", type=float, default=reg_clip,
                    help="the regression head is fitted on the normalised targets clipped at +-REG_CLIP")
    ap.add_argument("--no-calibration", action="store_true", help="skip the post-training marginal recalibration")
    ap.add_argument("--calibration-draws", type=int, default=16,
                    help="noise draws per training row of the marginal recalibration (the models before issue 4 "
                         "round 7: 2)")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu",
                    help="torch device of the regression-head and flow training (e.g. cuda); export and validation "
                         "run on the CPU")
    ap.add_argument("--seed", type=int, default=seed)


TRACK_TYPES = ("long", "upstream", "downstream")


def residual_types_of(args):
    names = [v.strip() for v in getattr(args, "residual_types", ",".join(TRACK_TYPES)).split(",") if v.strip()]
    return tuple(TRACK_TYPES.index(v) for v in names)


def reg_loss_of(args):
    return getattr(args, "reg_loss", "gaussian")


def reg_loss_text(args) -> str:
    loss = reg_loss_of(args)
    return {"gaussian": "Gaussian NLL", "laplace": "Laplace NLL",
            "student": f"Student-t NLL (nu = {getattr(args, 'reg_nu', 4.0):g})"}[loss]


def theta_edges_of(args):
    return tuple(float(v) for v in args.theta_edges.split(",") if v.strip())


def fit_model(args, x, t, tr, va, *, mscale_columns, p_edges, postprocess, log=print):
    """The whole training pipeline shared by both generative models: momentum loc/scale, optional
    regression head (deterministic-plus-residual), per-group quantile tables (track type x p bin x
    slope bin), flow training, marginal recalibration.  Returns ``(flow, fit figures)``."""
    theta_edges = theta_edges_of(args)
    setup = TableSetup(x, t, tr, mscale_columns=mscale_columns, p_edges=p_edges, theta_edges=theta_edges,
                       theta_fallback=getattr(args, "theta_fallback", "coarse"))
    mscale, tgrp = setup.mscale, setup.tgrp
    ts = mscale.transform(t, setup.lp, setup.grp)
    gauss = setup.gaussianizer(ts[tr], tgrp[tr])
    scaler = ConditionScaler(flag_columns=range(6, 12)).fit(x[tr])
    derived = DerivedConditions().fit(x[tr]) if args.derived else None
    dim = t.shape[1]
    named = {"all": list(range(dim)), "scaled": list(mscale_columns), "none": None}
    residual_columns = named[args.residual] if args.residual in named else [int(v) for v in args.residual.split(",")]
    flow = build_flow(x.shape[1], dim, scaler, gauss, n_layers=args.layers, hidden=args.hidden, embed=args.embed,
                      postprocess=postprocess, seed=args.seed, mscale=mscale, depth=args.depth,
                      activation=args.activation, p_edges=p_edges, theta_edges=theta_edges, derived=derived,
                      embed_layers=args.embed_layers, residual_columns=residual_columns,
                      residual_types=residual_types_of(args))
    fit = {}
    r = ts
    if residual_columns is not None:
        fit.update(train_regression(flow, x[tr], ts[tr], x[va], ts[va], max_seconds=args.reg_seconds,
                                    batch_size=args.batch_size, lr=args.lr, threads=args.threads, seed=args.seed,
                                    loss=reg_loss_of(args), nu=getattr(args, "reg_nu", 4.0),
                                    clip=getattr(args, "reg_clip", 8.0), device=getattr(args, "device", "cpu"),
                                    log=log))
        mu, sig = regression_loc_scale(flow, x)
        r = (ts - mu) / sig
        gauss = setup.gaussianizer(r[tr], tgrp[tr])
        flow.set_gauss(gauss)
    u = gauss.forward(r, tgrp).astype(np.float32)
    fit.update(train_flow(flow, x[tr], u[tr], x[va], u[va], max_seconds=args.max_seconds,
                          batch_size=args.batch_size, lr=args.lr, threads=args.threads, seed=args.seed,
                          device=getattr(args, "device", "cpu"), log=log))
    if not args.no_calibration:
        draws = getattr(args, "calibration_draws", 2)
        shift = calibrate_flow(flow, gauss, x[tr], r[tr], tgrp[tr], n_draws=draws)
        fit["calibration_max_cdf_shift"] = round(shift, 5)
        fit["calibration_draws"] = draws
    return flow, fit


def preprocessing_notes(args, p_edges) -> str:
    """The model-independent part of a card's ``technique.preprocessing`` text (from the settings)."""
    th = theta_edges_of(args)
    notes = [f"quantile tables (241 knots on g in [-5, 5]) per track type x log10 p bin (edges "
             f"{', '.join(str(e) for e in p_edges)})"
             + (f" x polar-slope bin sqrt(tx^2+ty^2) (edges {', '.join(str(e) for e in th)}; sub-groups with < 400 "
                + ("training rows use the same slope bin of the nearest p bins of their track type, widened until "
                   "400 rows)" if getattr(args, "theta_fallback", "coarse") == "p-neighbours" else
                   "training rows use their type x p table)") if th else "")]
    if args.derived:
        notes.append("derived conditions computed in the graph: log(theta + 1e-3), log(|tx| + 1e-3), log(|ty| + 1e-3)")
    if args.residual != "none":
        notes.append(f"deterministic-plus-residual ({args.residual} columns): a regression head (1 hidden layer of 64, "
                     f"{reg_loss_text(args)} on targets clipped at +-{getattr(args, 'reg_clip', 8.0):g}, trained first, then "
                     "frozen) gives mu(x), sigma(x); "
                     "the tables and the flow model (t - mu) / sigma"
                     + ("" if len(residual_types_of(args)) == 3 else
                        f" (track types {', '.join(TRACK_TYPES[k] for k in residual_types_of(args))} only; "
                        "mu = 0, sigma = 1 for the others)"))
    return "; ".join(notes)


def technique_settings(args) -> dict:
    return {"layers": args.layers, "hidden": args.hidden, "embed": args.embed, "embed_layers": args.embed_layers,
            "depth": args.depth, "activation": args.activation, "theta_edges": list(theta_edges_of(args)),
            **({"theta_fallback": args.theta_fallback}
               if theta_edges_of(args) and getattr(args, "theta_fallback", "coarse") != "coarse" else {}),
            "derived_conditions": bool(args.derived), "residual": args.residual,
            **({} if args.residual == "none" or len(residual_types_of(args)) == 3 else
               {"residual_types": [TRACK_TYPES[k] for k in residual_types_of(args)]}),
            **({} if args.residual == "none" else
               {"regression_loss": reg_loss_of(args),
                **({"regression_nu": float(args.reg_nu)} if reg_loss_of(args) == "student" else {}),
                "regression_clip": float(getattr(args, "reg_clip", 8.0))}),
            "calibrated": not args.no_calibration}


def fit_or_reload(args, name, x, t, tr, va, n_in: int, dim: int, *, unpost=None, **fit_options):
    """Train the model and export ``OUTPUT_DIR/<name>.onnx``, or with ``--validate-only`` keep the existing
    file and return its card (whose technique and training blocks the new card then keeps); with
    ``--recalibrate-only`` (models whose post-processing ``unpost`` inverts) first redo the marginal
    recalibration of the existing file (:func:`recalibrate_onnx`, ``--calibration-draws``), recorded in the
    card's training block.  Returns ``(out_dir, onnx_path, old_card or None, fit or None)``."""
    out_dir = Path(args.output_dir)
    onnx_path = out_dir / f"{name}.onnx"
    recalibrate = getattr(args, "recalibrate_only", False)
    if args.validate_only or recalibrate:
        import yaml

        card = yaml.safe_load((out_dir / f"{name}.yaml").read_text())
        if recalibrate:
            tech = card["technique"]
            info = recalibrate_onnx(onnx_path, x, t, tr, p_edges=tuple(tech["p_edges"]),
                                    theta_edges=tuple(tech.get("theta_edges", ())),
                                    theta_fallback=tech.get("theta_fallback", "coarse"),
                                    mscale_columns=fit_options["mscale_columns"], unpost=unpost,
                                    n_draws=args.calibration_draws)
            card["training"]["recalibration"] = {**info, "command": getattr(args, "command_line", None)}
        return out_dir, onnx_path, card, None
    flow, fit = fit_model(args, x, t, tr, va, **fit_options)
    out_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(flow, onnx_path, n_in, dim)
    return out_dir, onnx_path, None, fit


def export_onnx(flow, path, n_in: int, dim: int, opset: int = 17):
    """Export the sampling graph ``y = flow(x, noise)`` (inputs ``x``, ``noise``; output ``y``)."""
    import torch

    flow.eval()
    for layer in flow.layers:
        layer.freeze()
    x = torch.zeros(4, n_in)
    z = torch.zeros(4, dim)
    path = Path(path)
    with torch.no_grad():
        torch.onnx.export(flow, (x, z), str(path), input_names=["x", "noise"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "noise": {0: "N"}, "y": {0: "N"}},
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    harden_onnx(path, type_flag_columns=(10, 11) if getattr(flow, "n_groups", 1) > 1 else None)
    return path


def harden_onnx(path, type_flag_columns=(10, 11), clip: float = 1e15):
    """Prepend an input guard to an exported sampling graph (in place): NaN -> 0 and |v| <= clip for
    ``x`` and ``noise`` (so that every internal value stays finite and every table index in range),
    and, when the graph selects per-track-type tables, an inconsistent pair of type flags
    (is_upstream and is_downstream both set) keeps only is_downstream.  Idempotent."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    if any(n.name.startswith("input_guard/") for n in g.node):
        return path
    new_nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name=f"input_guard/{name}"))
        return f"input_guard/{name}"

    zero, lo, hi = const("zero", 0.0), const("lo", -clip), const("hi", clip)
    renames = {}
    for inp in g.input:
        raw, clean = inp.name, f"input_guard/{inp.name}_clean"
        nan = f"input_guard/{raw}_isnan"
        fixed = f"input_guard/{raw}_nonan"
        new_nodes += [helper.make_node("IsNaN", [raw], [nan], name=f"input_guard/{raw}_IsNaN"),
                      helper.make_node("Where", [nan, zero, raw], [fixed], name=f"input_guard/{raw}_Where"),
                      helper.make_node("Clip", [fixed, lo, hi], [clean], name=f"input_guard/{raw}_Clip")]
        if raw == "x" and type_flag_columns is not None:
            up, down = type_flag_columns
            dims = inp.type.tensor_type.shape.dim
            n_in = dims[1].dim_value
            onehot = np.zeros((1, n_in), np.float32)
            onehot[0, up] = 1.0
            starts = numpy_helper.from_array(np.array([down], np.int64), "input_guard/starts")
            ends = numpy_helper.from_array(np.array([down + 1], np.int64), "input_guard/ends")
            axes = numpy_helper.from_array(np.array([1], np.int64), "input_guard/axes")
            inits += [starts, ends, axes]
            half, one, oh = const("half", 0.5), const("one", 1.0), const("onehot_up", onehot)
            n = "input_guard/flags"
            new_nodes += [
                helper.make_node("Slice", [clean, starts.name, ends.name, axes.name], [f"{n}_down"], name=f"{n}_Slice"),
                helper.make_node("Greater", [f"{n}_down", half], [f"{n}_isdown"], name=f"{n}_Greater"),
                helper.make_node("Cast", [f"{n}_isdown"], [f"{n}_isdown_f"], to=TensorProto.FLOAT, name=f"{n}_Cast"),
                helper.make_node("Mul", [f"{n}_isdown_f", oh], [f"{n}_kill"], name=f"{n}_Mul"),
                helper.make_node("Sub", [one, f"{n}_kill"], [f"{n}_keep"], name=f"{n}_Sub"),
                helper.make_node("Mul", [clean, f"{n}_keep"], [f"{clean}_flags"], name=f"{n}_Apply"),
            ]
            clean = f"{clean}_flags"
        renames[raw] = clean
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    nodes = new_nodes + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(inits)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------
class OnnxSampler:
    """Run an exported model with onnxruntime (validation uses the shipped artifact itself)."""

    def __init__(self, path, threads: int = 1):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def __call__(self, x, noise, chunk: int = 65536):
        out = []
        for i in range(0, x.shape[0], chunk):
            out.append(self.sess.run(["y"], {"x": np.ascontiguousarray(x[i:i + chunk], dtype=np.float32),
                                             "noise": np.ascontiguousarray(noise[i:i + chunk], dtype=np.float32)})[0])
        return np.concatenate(out) if out else np.empty((0, 0), np.float32)


def time_model(path, x, noise_dim: int, batch: int = 10_000, repeats: int = 30) -> dict:
    """µs per row of one onnxruntime call (1 thread) on ``batch`` rows of ``x``: best and median of
    ``repeats`` calls (the best is the figure for an unloaded core; the machine is shared)."""
    s = OnnxSampler(path, threads=1)
    xb = np.ascontiguousarray(x[:batch], dtype=np.float32)
    nb = np.random.default_rng(0).standard_normal((xb.shape[0], noise_dim)).astype(np.float32)
    s(xb, nb)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        s(xb, nb)
        times.append(time.perf_counter() - t)
    per_row = np.asarray(times) / xb.shape[0] * 1e6
    return {"best": round(float(per_row.min()), 3), "median": round(float(np.median(per_row)), 3),
            "batch": int(xb.shape[0]), "threads": 1}


def ks_per_output(ref, gen, names) -> dict:
    from framework.validation import ks_distance

    return {n: round(float(ks_distance(ref[:, i], gen[:, i])), 5) for i, n in enumerate(names)}


P_BINS_LOG10 = (1.9, 3.5, 4.0, 4.5, 6.0)


def auc_in_p_bins(ref, gen, cond, log10_p, bins=P_BINS_LOG10, max_rows=30_000, seed=0) -> dict:
    """Classifier two-sample AUC of the joint outputs (with the conditions as extra features,
    i.e. a test of the conditional distribution) in bins of log10(p/MeV).

    ``ref`` and ``gen`` are row-paired (same conditions).  The rows of a bin are split at random in
    two disjoint halves: reference rows from one, generated rows from the other -- with twin rows
    (identical conditions in both classes) a cross-validated classifier learns each twin's label
    and the AUC is biased *below* 0.5."""
    from framework.validation import classifier_two_sample_auc

    rng = np.random.default_rng(seed)
    out = {}
    for lo, hi in zip(bins[:-1], bins[1:]):
        idx = np.flatnonzero((log10_p >= lo) & (log10_p < hi))
        idx = rng.permutation(idx)
        a, b = idx[: len(idx) // 2], idx[len(idx) // 2:]
        r = classifier_two_sample_auc(ref[a], gen[b], conditions=(cond[a], cond[b]), seed=seed,
                                      max_rows=max_rows)
        out[f"log10p_{lo}_{hi}"] = {"auc": round(r.auc, 4), "auc_error": round(r.auc_error, 4),
                                    "rows_per_class": int(len(a))}
    return out


def auc_in_p_bins_draws(sample, ref, cond, log10_p, noise_seed: int, noise_dim: int, draws: int = 4, **kw):
    """:func:`auc_in_p_bins` for ``draws`` noise draws (noise seed ``noise_seed + k``, random halves seed ``k``;
    draw 0 is the single-draw figure).  One draw's AUC scatters by more than its cross-validation error (the
    noise and the halves change), so the target is judged on the mean.  ``sample(noise)`` -> generated rows.
    Returns ``(summary for the card, [auc_in_p_bins result of each draw])``."""
    per = []
    for k in range(draws):
        noise = np.random.default_rng(noise_seed + k).standard_normal((len(ref), noise_dim)).astype(np.float32)
        per.append(auc_in_p_bins(ref, np.asarray(sample(noise), np.float64), cond, log10_p, seed=k, **kw))
    keys = list(per[0])
    summary = {"draws": draws, "noise_seeds": [noise_seed + k for k in range(draws)], "halves_seeds": list(range(draws)),
               "mean": {b: round(float(np.mean([r[b]["auc"] for r in per])), 4) for b in keys},
               "std": {b: round(float(np.std([r[b]["auc"] for r in per], ddof=1)), 4) if draws > 1 else 0.0
                       for b in keys},
               "per_draw": {b: [r[b]["auc"] for r in per] for b in keys}}
    return summary, per


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_card(path, card: dict):
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _float(dumper, value):
        return dumper.represent_float(float(value))

    _Dumper.add_representer(np.float32, _float)
    _Dumper.add_representer(np.float64, _float)
    with open(path, "w") as f:
        yaml.dump(card, f, Dumper=_Dumper, sort_keys=False, width=110, default_flow_style=None)


def command_line(script: str, argv) -> str:
    """The training command for a card: the script and its arguments, with the input file's directory dropped."""
    import shlex

    argv = list(argv)
    for i, v in enumerate(argv):
        if v == "--input" and i + 1 < len(argv):
            argv[i + 1] = Path(argv[i + 1]).name
        elif v.startswith("--input="):
            argv[i] = "--input=" + Path(v.split("=", 1)[1]).name
    return " ".join(["python -m models.training.tracking." + script] + [shlex.quote(v) for v in argv])


def training_block(args, rows_train: int, rows_validation: int, fit: dict, t_start: float, script: str) -> dict:
    """The ``training`` section of a generative tracking model card (both flows share it)."""
    import platform

    from models.training import device_text
    import time
    from pathlib import Path

    return {
        "sample": f"{Path(args.input).name}:Resolution",
        "provenance": "samples of LHCb's public 2016 MagUp Lamarr tracking parametrisation "
                      "(lhcb.trk.2016MU.20230128, GPL-3, (c) CERN for the LHCb collaboration) evaluated on "
                      "Pythia8 inputs",
        "license": "GPL-3.0-or-later",
        "rows_train": int(rows_train),
        "rows_validation": int(rows_validation),
        "settings": {"max_seconds": args.max_seconds, "batch_size": args.batch_size, "lr": args.lr,
                     "optimizer": "AdamW, cosine schedule, best validation NLL kept", "seed": args.seed,
                     "threads": args.threads, "device": device_text(getattr(args, "device", "cpu")), **fit},
        "wall_seconds_total": round(time.time() - t_start, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "command": getattr(args, "command_line", None) or f"python -m models.training.tracking.{script} --input FILE.root",
    }
