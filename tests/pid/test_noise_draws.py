"""The flash-PID noise draws are the framework's counter-based numbers, bit for bit (a change of
their implementation must not change any realisation)."""
import numpy as np

from algorithms.pid.flash import draw_normal, draw_uniform
from framework.random import counter_normal, counter_uniform


def test_draws_are_counter_based_numbers():
    rng = np.random.default_rng(3)
    events = rng.integers(0, 2**40, 300)
    idx = rng.integers(0, 500, 300)
    key = np.uint64(0x9E3779B97F4A7C15)
    z = draw_normal(key, events, idx, 10)
    u = draw_uniform(key, events, idx)
    ref_z = np.array([[counter_normal(key, e, i, j) for j in range(10)] for e, i in zip(events, idx)], np.float32)
    ref_u = np.array([counter_uniform(key, e, i, 0) for e, i in zip(events, idx)])
    assert np.array_equal(z, ref_z)
    assert np.array_equal(u, ref_u)
    # and they are standard normals (mean/width pulls on 3000 numbers)
    assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.std() - 1) < 5 / np.sqrt(2 * z.size)
