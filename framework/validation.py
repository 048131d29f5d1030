"""Physics-free statistics used to validate flash-simulation models against reference samples.

Every branch (tracking, PID, calorimetry...) uses the same four tools so that model cards and
validation scripts quote comparable numbers:

* :func:`calibration_in_bins` -- predicted probability vs observed rate in (multi-dimensional)
  bins, with binomial errors: is a classifier calibrated?
* :func:`ks_distance` / :func:`ks_test` -- two-sample Kolmogorov-Smirnov statistic (optionally
  weighted) and its asymptotic p-value: do two 1-D distributions agree?
* :func:`classifier_two_sample_auc` -- "classifier two-sample test": ROC AUC of a gradient-boosted
  classifier trained to separate real from generated rows, evaluated on held-out rows.  0.5 means
  indistinguishable; 1.0 means trivially separable.  Catches correlations that 1-D tests miss.
* :func:`pull_widths` -- robust core width (1.4826 * MAD), clipped RMS and tail fraction of pulls:
  are the reported uncertainties right?

Results are small dataclasses with a ``to_dict()`` giving plain Python floats/ints (ready for YAML
model cards).  ``numpy`` only at import time; scikit-learn (validation-only dependency) is
imported lazily inside :func:`classifier_two_sample_auc`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "CalibrationBin",
    "CalibrationTable",
    "calibration_in_bins",
    "KSResult",
    "ks_distance",
    "ks_test",
    "C2STResult",
    "classifier_two_sample_auc",
    "PullWidths",
    "pull_widths",
    "effective_count",
    "format_rows",
]


def _plain(value):
    """Convert numpy scalars / tuples recursively to plain Python (for YAML / JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    return value


def effective_count(weights) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 (= N for unit weights)."""
    w = np.asarray(weights, dtype=np.float64)
    s2 = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / s2 if s2 > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------
@dataclass
class CalibrationBin:
    """One bin of a calibration table.

    ``bin``: per variable, the ``(low, high)`` edges of this bin.  ``n``: sum of weights;
    ``n_eff``: effective number of entries; ``predicted``: weighted mean of the predicted
    probability; ``observed``: weighted mean of the outcome (0/1 draws or soft labels);
    ``error``: binomial standard error of the observed rate under the prediction,
    sqrt(p (1 - p) / n_eff) with p = predicted clipped to [1/n_eff, 1 - 1/n_eff] (an upper bound
    when outcomes are soft labels);
    ``diff`` = observed - predicted; ``pull`` = diff / error; ``diff_error``: standard error of
    the mean per-row difference (outcome - prob) in the bin -- for soft labels the relevant
    statistical uncertainty of ``diff`` (a model whose per-row errors have random sign gives
    |diff| ~ diff_error).
    """

    bin: dict
    n: float
    n_eff: float
    predicted: float
    observed: float
    error: float
    diff: float
    pull: float
    diff_error: float = float("nan")

    def to_dict(self) -> dict:
        return _plain(asdict(self))


@dataclass
class CalibrationTable:
    """Predicted vs observed rate in bins.

    ``max_abs_diff``: max |observed - predicted| over bins with ``n_eff >= min_count``;
    ``max_abs_diff_bin``: where it happens; ``max_abs_diff_error``: that bin's ``diff_error``;
    ``max_abs_pull``: max |pull| over the same bins;
    ``chi2``/``ndf``: sum of pull^2 over those bins and their number (calibrated model:
    chi2/ndf ~ 1 for 0/1 outcomes, < 1 for soft labels); ``overall``: (predicted, observed) over
    all rows.
    """

    variables: list
    bins: list = field(default_factory=list)
    max_abs_diff: float = 0.0
    max_abs_diff_bin: dict | None = None
    max_abs_diff_error: float = float("nan")
    max_abs_pull: float = 0.0
    chi2: float = 0.0
    ndf: int = 0
    min_count: float = 0.0
    overall: dict = field(default_factory=dict)

    def to_dict(self, with_bins: bool = False) -> dict:
        d = {
            "variables": list(self.variables),
            "max_abs_diff": self.max_abs_diff,
            "max_abs_diff_bin": self.max_abs_diff_bin,
            "max_abs_diff_error": self.max_abs_diff_error,
            "max_abs_pull": self.max_abs_pull,
            "chi2": self.chi2,
            "ndf": self.ndf,
            "min_count": self.min_count,
            "overall": self.overall,
        }
        if with_bins:
            d["bins"] = [b.to_dict() for b in self.bins]
        return _plain(d)

    def format(self, title: str = "") -> str:
        """Human-readable table (one line per bin)."""
        rows = []
        for b in self.bins:
            label = " ".join(f"{k}=[{lo:.3g},{hi:.3g})" for k, (lo, hi) in b.bin.items())
            rows.append({"bin": label, "n": b.n, "pred": b.predicted, "obs": b.observed,
                         "err": b.error, "diff": b.diff, "pull": b.pull})
        head = f"{title}  max|diff|={self.max_abs_diff:.4f}  max|pull|={self.max_abs_pull:.2f}  " \
               f"chi2/ndf={self.chi2:.1f}/{self.ndf}"
        return head + "\n" + format_rows(rows)


def calibration_in_bins(
    prob,
    outcome,
    bins: Mapping[str, tuple],
    weights=None,
    min_count: float = 100.0,
) -> CalibrationTable:
    """Compare a predicted probability with the observed rate in bins of one or more variables.

    Parameters
    ----------
    prob : array [N]
        Predicted probability of the outcome for each row.
    outcome : array [N]
        Observed outcome: 0/1 (bool) draws, or soft labels in [0, 1] (reference probabilities).
    bins : dict name -> (values [N], edges)
        Binning variables; the table has one bin per combination (outer product) of the 1-D bins.
        Rows outside the edges are ignored.  An empty dict gives a single inclusive bin.
    weights : array [N], optional
        Per-row weights.
    min_count : float
        Bins with fewer effective entries are listed but do not enter ``max_abs_diff``,
        ``max_abs_pull`` and ``chi2``.
    """
    prob = np.asarray(prob, dtype=np.float64).ravel()
    outcome = np.asarray(outcome, dtype=np.float64).ravel()
    n = prob.shape[0]
    if outcome.shape[0] != n:
        raise ValueError(f"calibration_in_bins: prob has {n} rows but outcome has {outcome.shape[0]}")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape[0] != n:
        raise ValueError(f"calibration_in_bins: weights has {w.shape[0]} rows, expected {n}")

    names = list(bins)
    flat = np.zeros(n, dtype=np.int64)
    inside = np.isfinite(prob) & np.isfinite(outcome) & np.isfinite(w)
    shape = []
    edges_list = []
    for name in names:
        values, edges = bins[name]
        values = np.asarray(values, dtype=np.float64).ravel()
        edges = np.asarray(edges, dtype=np.float64)
        if values.shape[0] != n:
            raise ValueError(f"calibration_in_bins: bin variable {name!r} has {values.shape[0]} rows, expected {n}")
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"calibration_in_bins: edges of {name!r} must be increasing with >= 2 entries")
        idx = np.searchsorted(edges, values, side="right") - 1
        ok = (idx >= 0) & (idx < edges.size - 1)
        inside &= ok
        flat = flat * (edges.size - 1) + np.where(ok, idx, 0)
        shape.append(edges.size - 1)
        edges_list.append(edges)
    nbins = int(np.prod(shape)) if shape else 1

    flat = flat[inside]
    ws, ps, os = w[inside], prob[inside], outcome[inside]
    sw = np.bincount(flat, weights=ws, minlength=nbins)
    sw2 = np.bincount(flat, weights=ws * ws, minlength=nbins)
    swp = np.bincount(flat, weights=ws * ps, minlength=nbins)
    swo = np.bincount(flat, weights=ws * os, minlength=nbins)
    dd = os - ps
    swd2 = np.bincount(flat, weights=ws * dd * dd, minlength=nbins)

    table = CalibrationTable(variables=names, min_count=float(min_count))
    best = -1.0
    for k in range(nbins):
        if sw[k] <= 0:
            continue
        n_eff = sw[k] ** 2 / sw2[k]
        pred = swp[k] / sw[k]
        obs = swo[k] / sw[k]
        # binomial error under the prediction; p kept >= 1/n_eff away from 0 and 1 so that a
        # bin predicted at ~0 with one observed entry does not produce an absurd pull
        lo = min(1.0 / n_eff, 0.5)
        p = min(max(pred, lo), 1.0 - lo)
        err = math.sqrt(p * (1.0 - p) / n_eff)
        diff = obs - pred
        pull = diff / err
        var_d = max(swd2[k] / sw[k] - diff * diff, 0.0)
        diff_err = math.sqrt(var_d / max(n_eff - 1.0, 1.0))
        multi = np.unravel_index(k, shape) if shape else ()
        label = {name: (float(edges_list[i][j]), float(edges_list[i][j + 1]))
                 for i, (name, j) in enumerate(zip(names, multi))}
        b = CalibrationBin(bin=label, n=float(sw[k]), n_eff=float(n_eff), predicted=float(pred),
                           observed=float(obs), error=float(err), diff=float(diff), pull=float(pull),
                           diff_error=float(diff_err))
        table.bins.append(b)
        if n_eff >= min_count:
            table.chi2 += pull * pull
            table.ndf += 1
            table.max_abs_pull = max(table.max_abs_pull, abs(pull))
            if abs(diff) > best:
                best = abs(diff)
                table.max_abs_diff = abs(diff)
                table.max_abs_diff_bin = label
                table.max_abs_diff_error = float(diff_err)
    tot = float(sw.sum())
    table.overall = {
        "n": tot,
        "predicted": float(swp.sum() / tot) if tot > 0 else float("nan"),
        "observed": float(swo.sum() / tot) if tot > 0 else float("nan"),
    }
    table.chi2 = float(table.chi2)
    table.max_abs_pull = float(table.max_abs_pull)
    return table


# --------------------------------------------------------------------------------------------
# Kolmogorov-Smirnov
# --------------------------------------------------------------------------------------------
@dataclass
class KSResult:
    """Two-sample KS test: ``statistic`` (sup |F_a - F_b|), asymptotic ``pvalue`` computed with
    the effective sample sizes ``n_eff_a``, ``n_eff_b`` (Kish, for weighted samples)."""

    statistic: float
    pvalue: float
    n_eff_a: float
    n_eff_b: float

    def to_dict(self) -> dict:
        return _plain(asdict(self))


def _ecdf_sup(a, b, wa, wb) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    wa = np.ones_like(a) if wa is None else np.asarray(wa, dtype=np.float64).ravel()
    wb = np.ones_like(b) if wb is None else np.asarray(wb, dtype=np.float64).ravel()
    ma, mb = np.isfinite(a) & np.isfinite(wa), np.isfinite(b) & np.isfinite(wb)
    a, wa, b, wb = a[ma], wa[ma], b[mb], wb[mb]
    if a.size == 0 or b.size == 0:
        raise ValueError("ks_distance: both samples need at least one finite value")
    values = np.concatenate([a, b])
    weights = np.concatenate([wa / wa.sum(), -wb / wb.sum()])
    order = np.argsort(values, kind="mergesort")
    values, weights = values[order], weights[order]
    cum = np.cumsum(weights)
    # evaluate only at the last occurrence of tied values
    last = np.r_[values[1:] != values[:-1], True]
    return float(np.max(np.abs(cum[last]))), effective_count(wa), effective_count(wb)


def ks_distance(a, b, weights_a=None, weights_b=None) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup_x |F_a(x) - F_b(x)| (weighted ECDFs optional).
    Non-finite values are dropped."""
    return _ecdf_sup(a, b, weights_a, weights_b)[0]


def _kolmogorov_sf(x: float) -> float:
    if x <= 0:
        return 1.0
    if x < 0.2:
        return 1.0
    s = 0.0
    for k in range(1, 101):
        term = 2.0 * (-1) ** (k - 1) * math.exp(-2.0 * k * k * x * x)
        s += term
        if abs(term) < 1e-16:
            break
    return min(max(s, 0.0), 1.0)


def ks_test(a, b, weights_a=None, weights_b=None) -> KSResult:
    """KS statistic and asymptotic p-value (Kolmogorov distribution with the Stephens
    correction, effective sizes for weighted samples)."""
    d, na, nb = _ecdf_sup(a, b, weights_a, weights_b)
    ne = na * nb / (na + nb)
    sq = math.sqrt(ne)
    p = _kolmogorov_sf((sq + 0.12 + 0.11 / sq) * d)
    return KSResult(statistic=d, pvalue=p, n_eff_a=na, n_eff_b=nb)


# --------------------------------------------------------------------------------------------
# Classifier two-sample test
# --------------------------------------------------------------------------------------------
@dataclass
class C2STResult:
    """Classifier two-sample test.  ``auc``: ROC AUC of out-of-fold predictions (0.5 =
    indistinguishable); ``auc_error``: Hanley-McNeil standard error of the AUC under the
    hypothesis AUC = 0.5 (so |auc - 0.5| / auc_error is a significance); ``n_real``,
    ``n_generated``: rows used; ``n_folds``: cross-validation folds."""

    auc: float
    auc_error: float
    n_real: int
    n_generated: int
    n_folds: int

    @property
    def significance(self) -> float:
        return (self.auc - 0.5) / self.auc_error if self.auc_error > 0 else float("inf")

    def to_dict(self) -> dict:
        d = _plain(asdict(self))
        d["significance"] = float(self.significance)
        return d


def _as_2d(x, name):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"classifier_two_sample_auc: {name} must be 1-D or 2-D, got shape {x.shape}")
    return x


def _hanley_mcneil(auc, n1, n2):
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1 - auc) + (n1 - 1) * (q1 - auc * auc) + (n2 - 1) * (q2 - auc * auc)) / (n1 * n2)
    return math.sqrt(max(var, 0.0))


def classifier_two_sample_auc(
    real,
    generated,
    conditions: tuple | None = None,
    seed: int = 0,
    n_folds: int = 3,
    max_rows: int | None = 200_000,
    max_iter: int = 100,
    n_threads: int | None = 1,
) -> C2STResult:
    """ROC AUC of a classifier separating ``real`` from ``generated`` rows (held-out estimate).

    Parameters
    ----------
    real, generated : arrays [N, d] (or [N])
        The two samples, same columns.
    conditions : (cond_real [N, c], cond_generated [M, c]), optional
        Conditioning variables appended as classifier features: the test then checks the
        *conditional* distributions (e.g. resolution given momentum) -- with identical condition
        marginals the classifier can only use the dependence of the targets on them.
    seed : int
        Seeds the subsampling, fold assignment and the classifier.
    n_folds : int
        Stratified K-fold cross-validation: every row gets an out-of-fold score.
    max_rows : int or None
        Each sample is randomly subsampled to at most this many rows (speed).
    max_iter : int
        Boosting iterations of sklearn's ``HistGradientBoostingClassifier``.
    n_threads : int or None
        OpenMP threads used by the classifier (``threadpoolctl``); None = library default.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    xr, xg = _as_2d(real, "real"), _as_2d(generated, "generated")
    if xr.shape[1] != xg.shape[1]:
        raise ValueError(f"classifier_two_sample_auc: real has {xr.shape[1]} columns, generated {xg.shape[1]}")
    if conditions is not None:
        cr, cg = _as_2d(conditions[0], "conditions[0]"), _as_2d(conditions[1], "conditions[1]")
        if cr.shape[0] != xr.shape[0] or cg.shape[0] != xg.shape[0]:
            raise ValueError("classifier_two_sample_auc: conditions must have as many rows as the samples")
        xr, xg = np.hstack([xr, cr]), np.hstack([xg, cg])
    rng = np.random.default_rng(seed)
    if max_rows is not None:
        if xr.shape[0] > max_rows:
            xr = xr[rng.choice(xr.shape[0], max_rows, replace=False)]
        if xg.shape[0] > max_rows:
            xg = xg[rng.choice(xg.shape[0], max_rows, replace=False)]
    x = np.vstack([xr, xg])
    y = np.r_[np.zeros(xr.shape[0], dtype=np.int8), np.ones(xg.shape[0], dtype=np.int8)]
    score = np.empty(x.shape[0])
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - sklearn depends on threadpoolctl
        import contextlib

        def threadpool_limits(limits=None):
            return contextlib.nullcontext()
    with threadpool_limits(limits=n_threads):
        for train, test in folds.split(x, y):
            clf = HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed, early_stopping=False)
            clf.fit(x[train], y[train])
            score[test] = clf.predict_proba(x[test])[:, 1]
    auc = float(roc_auc_score(y, score))
    return C2STResult(auc=auc, auc_error=_hanley_mcneil(0.5, xr.shape[0], xg.shape[0]),
                      n_real=int(xr.shape[0]), n_generated=int(xg.shape[0]), n_folds=int(n_folds))


# --------------------------------------------------------------------------------------------
# Pulls
# --------------------------------------------------------------------------------------------
@dataclass
class PullWidths:
    """Summary of a pull distribution (ideal: N(0, 1)).

    ``n``: finite pulls; ``mean``/``mean_error``: mean of the clipped pulls and its error;
    ``median``; ``core_width``: 1.4826 * median |pull - median| (robust sigma, = 1 for N(0,1));
    ``core_width_error``: its asymptotic statistical error for Gaussian pulls,
    1.166 * width / sqrt(n) (the MAD is 37 % efficient); ``rms``: RMS of pulls with |pull| <= clip (for N(0,1) and clip=10: 1);
    ``rms_error``: sigma/sqrt(2n); ``tail_fraction``: fraction with |pull| > 3
    (N(0,1): 0.0027); ``clip``."""

    n: int
    mean: float
    mean_error: float
    median: float
    core_width: float
    core_width_error: float
    rms: float
    rms_error: float
    tail_fraction: float
    clip: float

    def to_dict(self) -> dict:
        return _plain(asdict(self))


def pull_widths(pulls, clip: float = 10.0) -> PullWidths:
    """Core width (1.4826 * MAD), clipped RMS (|pull| <= clip) and tail fraction (|pull| > 3)."""
    x = np.asarray(pulls, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        nan = float("nan")
        return PullWidths(0, nan, nan, nan, nan, nan, nan, nan, nan, float(clip))
    med = float(np.median(x))
    core = 1.4826 * float(np.median(np.abs(x - med)))
    xc = x[np.abs(x) <= clip]
    nc = max(int(xc.size), 1)
    mean = float(np.mean(xc)) if xc.size else float("nan")
    rms = float(np.sqrt(np.mean(xc * xc))) if xc.size else float("nan")
    return PullWidths(
        n=n,
        mean=mean,
        mean_error=rms / math.sqrt(nc),
        median=med,
        core_width=core,
        core_width_error=1.166 * core / math.sqrt(n),
        rms=rms,
        rms_error=rms / math.sqrt(2.0 * nc),
        tail_fraction=float(np.mean(np.abs(x) > 3.0)),
        clip=float(clip),
    )


# --------------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------------
def format_rows(rows: Sequence[Mapping], floatfmt: str = ".4g") -> str:
    """Plain-text table of a list of dicts (same keys); floats formatted with ``floatfmt``."""
    if not rows:
        return "(empty)"
    keys = list(rows[0])

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return format(float(v), floatfmt)
        return str(v)

    cells = [[fmt(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.rjust(wd) for k, wd in zip(keys, widths))]
    lines += ["  ".join(c.rjust(wd) for c, wd in zip(row, widths)) for row in cells]
    return "\n".join(lines)
