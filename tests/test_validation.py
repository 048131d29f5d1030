"""Tests of framework.validation (physics-free statistics)."""
import math

import numpy as np
import pytest

from framework.validation import (
    calibration_in_bins,
    classifier_two_sample_auc,
    ks_distance,
    ks_test,
    pull_widths,
)


def test_calibration_calibrated_model_draws():
    rng = np.random.default_rng(1)
    n = 200_000
    x = rng.uniform(0, 1, n)
    y = rng.uniform(-1, 1, n)
    p = 0.2 + 0.6 * x * (0.5 + 0.5 * y * y)
    outcome = rng.uniform(size=n) < p
    t = calibration_in_bins(p, outcome, {"x": (x, np.linspace(0, 1, 6)), "y": (y, [-1, 0, 1])})
    assert t.ndf == 10 and len(t.bins) == 10
    # chi2 of a calibrated model ~ chi2(ndf): generous 5-sigma-ish bound
    assert t.chi2 < t.ndf + 5 * math.sqrt(2 * t.ndf)
    assert t.max_abs_diff < 0.01
    assert abs(t.overall["observed"] - t.overall["predicted"]) < 0.005


def test_calibration_detects_miscalibration_and_soft_labels():
    rng = np.random.default_rng(2)
    n = 100_000
    x = rng.uniform(0, 1, n)
    truth = 0.3 + 0.4 * x
    biased = truth + 0.05 * (x > 0.5)
    t = calibration_in_bins(biased, truth, {"x": (x, np.linspace(0, 1, 5))})
    assert t.max_abs_diff == pytest.approx(0.05, abs=1e-9)
    assert t.max_abs_diff_bin["x"][0] >= 0.5
    # identical soft labels: zero difference everywhere
    t0 = calibration_in_bins(truth, truth, {"x": (x, np.linspace(0, 1, 5))})
    assert t0.max_abs_diff < 1e-12


def test_calibration_weights_and_outside_rows():
    p = np.array([0.5, 0.5, 0.9, 0.1])
    o = np.array([1.0, 0.0, 1.0, 1.0])
    v = np.array([0.1, 0.2, 0.3, 5.0])  # last row outside the edges
    t = calibration_in_bins(p, o, {"v": (v, [0.0, 1.0])}, weights=[1, 3, 0, 1], min_count=0)
    assert t.bins[0].observed == pytest.approx(0.25)
    assert t.bins[0].predicted == pytest.approx(0.5)
    assert t.bins[0].n_eff == pytest.approx(16 / 10)
    with pytest.raises(ValueError):
        calibration_in_bins(p, o[:3], {})


def test_ks_distance_and_pvalue():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=20_000), rng.normal(size=30_000)
    r = ks_test(a, b)
    assert r.statistic < 0.03 and r.pvalue > 1e-3
    shifted = ks_test(a, b + 0.1)
    assert shifted.pvalue < 1e-6
    # exact small case: F_a and F_b differ by 1/2 at most
    assert ks_distance([1, 2], [2, 3]) == pytest.approx(0.5)
    # weights: a sample weighted to reproduce another's distribution
    x = rng.uniform(0, 1, 50_000)
    target = rng.triangular(0, 1, 1, 50_000)
    assert ks_distance(x, target, weights_a=2 * x) < 0.02
    # the p-value of KS under H0 is uniform: check on repeated small samples
    ps = [ks_test(rng.normal(size=300), rng.normal(size=200)).pvalue for _ in range(300)]
    assert 0.4 < np.mean(ps) < 0.6


def test_pull_widths_gaussian_and_tails():
    rng = np.random.default_rng(4)
    x = rng.normal(size=100_000)
    w = pull_widths(x)
    assert abs(w.core_width - 1) < 4 * w.core_width_error
    assert abs(w.rms - 1) < 4 * w.rms_error
    assert abs(w.mean) < 4 * w.mean_error
    assert w.tail_fraction == pytest.approx(0.0027, abs=0.0008)
    # core width is robust to 2% outliers; rms is not
    y = np.concatenate([x, rng.normal(0, 8, 2000)])
    wy = pull_widths(y)
    assert abs(wy.core_width - 1) < 0.03 and wy.rms > 1.15 and wy.tail_fraction > 0.01
    assert pull_widths(np.array([np.nan])).n == 0


def test_classifier_two_sample_auc():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(5)
    n = 2500
    c = rng.uniform(0, 1, n)
    c2 = rng.uniform(0, 1, n)
    real = rng.normal(size=(n, 2)) * (1 + c[:, None])
    same = rng.normal(size=(n, 2)) * (1 + c2[:, None])
    r = classifier_two_sample_auc(real, same, conditions=(c, c2), seed=0, max_iter=30)
    assert abs(r.auc - 0.5) < 5 * r.auc_error + 0.01
    # generated ignores the condition dependence -> detectable only conditionally
    wrong = rng.normal(size=(n, 2)) * 1.5
    r2 = classifier_two_sample_auc(real, wrong, conditions=(c, c2), seed=0, max_iter=30)
    assert r2.auc > 0.53 and r2.significance > 4
