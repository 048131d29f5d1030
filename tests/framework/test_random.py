import numpy as np
from scipy import stats

from framework.random import RandomStreams, counter_normal, counter_uniform, stable_hash


def test_uniform_is_uniform_and_in_open_interval():
    r = RandomStreams(7, 1, "Alg")
    ev = np.repeat(np.arange(2000), 50)
    idx = np.tile(np.arange(50), 2000)
    u = r.uniform(ev, idx)
    assert u.min() > 0 and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    # neighbouring keys are uncorrelated
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01


def test_normal_moments_and_ks():
    z = RandomStreams(7, 1, "Alg").normal(np.arange(100_000), 3)
    assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.std() - 1) < 0.01
    assert stats.kstest(z, "norm").pvalue > 1e-3


def test_keyed_by_event_and_index_not_by_position():
    r = RandomStreams(1, 1, "Alg")
    ev = np.array([5, 9, 5, 2])
    idx = np.array([0, 1, 1, 0])
    u_all = r.uniform(ev, idx, n=3)
    u_rev = r.uniform(ev[::-1], idx[::-1], n=3)[::-1]
    np.testing.assert_array_equal(u_all, u_rev)
    key = r.key_for(0)
    assert u_all[1, 2] == counter_uniform(key, 9, 1, 2)
    assert r.normal(ev, idx)[0] == counter_normal(key, 5, 0, 0)


def test_streams_algorithms_seeds_runs_differ():
    ev = np.arange(1000)
    base = RandomStreams(1, 1, "A").uniform(ev, 0)
    for other in (RandomStreams(2, 1, "A").uniform(ev, 0), RandomStreams(1, 2, "A").uniform(ev, 0),
                  RandomStreams(1, 1, "B").uniform(ev, 0), RandomStreams(1, 1, "A").uniform(ev, 0, stream=1)):
        assert abs(np.corrcoef(base, other)[0, 1]) < 0.1 and not np.array_equal(base, other)


def test_stable_hash_is_stable():
    # a change of this value would silently change every random stream: keep it fixed
    assert stable_hash("Generation") == 0xa7b5ec1afaa1275d
    assert stable_hash("a") != stable_hash("b")


def test_row_hash_helpers_are_bit_identical_to_counter_functions():
    import numba as nb

    from framework.random import counter_normal, counter_uniform, row_key, row_normal, row_uniform

    @nb.njit
    def mismatches(key):
        bad = 0
        for e in range(40):
            for i in range(6):
                h = row_key(key, e, i)
                for d in range(8):
                    bad += row_uniform(h, d) != counter_uniform(key, e, i, d)
                    bad += row_normal(h, d) != counter_normal(key, e, i, d)
        return bad

    assert mismatches(np.uint64(0xDEADBEEF12345)) == 0


def test_paired_normals_match_scalar_form_and_are_independent_normals():
    from framework.random import normal_pair_draw

    rs = RandomStreams(7, 1, "alg")
    ev = np.arange(20000)
    z = rs.normal(ev, 3, stream=2, n=5)
    key = rs.key_for(2)
    for d in range(5):
        assert np.array_equal(z[:50, d], [normal_pair_draw(key, e, 3, d) for e in range(50)])
    # an odd first draw gives the same numbers as the full row
    assert np.array_equal(rs.normal(ev[:50], 3, stream=2, n=3, first_draw=1), z[:50, 1:4])
    for d in range(5):
        assert stats.kstest(z[:, d], "norm").pvalue > 1e-3
    # the cosine and sine halves of a pair are uncorrelated, and so are their squares
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 4 / np.sqrt(len(ev))
    assert abs(np.corrcoef(z[:, 0] ** 2, z[:, 1] ** 2)[0, 1]) < 4 / np.sqrt(len(ev))
