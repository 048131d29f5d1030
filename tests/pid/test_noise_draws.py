"""The flash-PID noise draws are the framework's counter-based numbers, bit for bit: the normals are
``ctx.random.normal``'s (both halves of each Box-Muller pair, as the tracking models' noise), the uniforms
``counter_uniform`` (a change of their implementation must not change any realisation)."""
import numpy as np

from algorithms.pid.flash import draw_normal, draw_uniform
from framework.random import RandomStreams, counter_uniform, normal_pair_draw


def test_draws_are_counter_based_numbers():
    rng = np.random.default_rng(3)
    events = rng.integers(0, 2**40, 300)
    idx = rng.integers(0, 500, 300)
    key = np.uint64(0x9E3779B97F4A7C15)
    z = draw_normal(key, events, idx, 10)
    u = draw_uniform(key, events, idx)
    ref_z = np.array([[normal_pair_draw(key, e, i, j) for j in range(10)] for e, i in zip(events, idx)], np.float32)
    # the same numbers as the framework's vectorised streams (what ctx.random.normal returns)
    streams = RandomStreams(seed=11, run_number=1, name="FlashPID")
    k = streams.key_for(1)
    assert np.array_equal(draw_normal(k, events, idx, 10), streams.normal(events, idx, stream=1, n=10).astype(np.float32))
    ref_u = np.array([counter_uniform(key, e, i, 0) for e, i in zip(events, idx)])
    assert np.array_equal(z, ref_z)
    assert np.array_equal(u, ref_u)
    # and they are standard normals (mean/width pulls on 3000 numbers)
    assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.std() - 1) < 5 / np.sqrt(2 * z.size)
