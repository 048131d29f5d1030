"""The PID validation's two-sample tests (models.training.pid.train_flash_pid), without torch: they run in CI."""
import numpy as np


def test_c2st_with_differences_sees_a_spread_ridge_the_plain_test_barely_sees():
    """Two 4-column samples with the same marginals (to 0.03 %): the reference has a sharp ridge along
    column 0 - column 3 (sigma 0.05 on columns of sigma 3), the 'model' the same ridge twice as wide.  The
    plain two-sample test, cutting along axes, hardly separates them; with the pairwise differences it
    does.  Identical distributions give 0.5 within errors."""
    from framework.validation import classifier_two_sample_auc
    from models.training.pid.train_flash_pid import c2st_with_differences

    rng = np.random.default_rng(7)
    n = 20_000

    def sample(width):
        a = 3.0 * rng.standard_normal(n)
        return np.stack([a, rng.standard_normal(n), rng.standard_normal(n), a + width * rng.standard_normal(n)], 1)

    names = ["A", "B", "C", "D"]
    ref, model, same = sample(0.05), sample(0.1), sample(0.05)
    plain = classifier_two_sample_auc(ref, model, seed=2, max_rows=n)
    rd = c2st_with_differences(ref, model, names, seed=2, max_rows=n)
    assert rd["columns"][4:] == ["A - B", "A - C", "A - D", "B - C", "B - D", "C - D"] and rd["rows"] == n
    assert plain.auc < 0.6 and rd["auc"] - plain.auc > 10 * rd["auc_error"] and rd["auc"] > 0.65
    null = c2st_with_differences(ref, same, names, seed=2, max_rows=n)
    assert abs(null["auc"] - 0.5) < 4 * null["auc_error"] + 0.005
