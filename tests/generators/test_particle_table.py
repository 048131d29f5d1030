"""ParticleTable: dense vectorised look-ups agree with `particle`, names resolve in every convention."""
import math

import numpy as np
import pytest
from particle import Particle

from algorithms.common.particle_table import ConfigurationError, default_table, lhcb_alias


@pytest.fixture(scope="module")
def table():
    return default_table()


def test_vectorised_lookups_match_particle(table):
    pids = np.array([211, -211, 321, 13, -13, 443, 521, -521, 5122, 4122, 313, 310, 3122, 22, 2212, 100443, 111])
    for pid, m, q, w in zip(pids, table.mass(pids), table.charge(pids), table.width(pids)):
        p = Particle.from_pdgid(int(pid))
        assert m == p.mass
        assert q == p.charge
        assert w == p.width


def test_ctau_none_and_inf_are_handled(table):
    # stable -> inf; known ctau -> copied; ctau None with a width -> hbar c / width
    assert np.isinf(table.ctau([2212, 22, 11])).all()
    assert table.ctau([521])[0] == pytest.approx(Particle.from_pdgid(521).ctau)
    missing = [p for p in Particle.all() if p.ctau is None and p.width and p.width > 0][:20]
    if missing:
        from hepunits.constants import hbarc
        got = table.ctau([int(p.pdgid) for p in missing])
        np.testing.assert_allclose(got, [hbarc / p.width for p in missing], rtol=1e-12)
    unknown = [p for p in Particle.all() if p.ctau is None and p.width is None][:20]
    assert np.isnan(table.ctau([int(p.pdgid) for p in unknown])).all()


def test_unknown_pids_give_nan_and_large_pids_work(table):
    out = table.mass(np.array([99999, 521, 1000020040, 123456789]))
    assert math.isnan(out[0]) and math.isnan(out[3])
    assert out[1] == Particle.from_pdgid(521).mass
    assert out[2] == pytest.approx(Particle.from_pdgid(1000020040).mass)
    assert table.mass(np.zeros(0, dtype=np.int64)).shape == (0,)
    assert table.mass(np.full((3, 2), 211)).shape == (3, 2)


def test_neutrinos_are_massless(table):
    assert (table.mass([12, -14, 16]) == 0).all()


@pytest.mark.parametrize("name,pid", [
    ("J/psi(1S)", 443), ("J/psi", 443), ("K*(892)0", 313), ("K*(892)~0", -313), ("Lambda_b0", 5122),
    ("Lambda_b~0", -5122), ("anti-Lambda_b0", -5122), ("Lambda_c+", 4122), ("Lambda_c~-", -4122),
    ("anti-nu_mu", -14), ("nu_mu~", -14), ("p+", 2212), ("p~-", -2212), ("KS0", 310), ("K_S0", 310),
    ("Lambda0", 3122), ("B~0", -511), ("B_s0", 531), ("psi(2S)", 100443), ("gamma", 22), ("mu+", -13),
])
def test_names(table, name, pid):
    assert table.pid(name) == pid


def test_did_you_mean(table):
    with pytest.raises(ConfigurationError, match=r"did you mean .*'J/psi\(1S\)'"):
        table.pid("J/psi(1s)")
    with pytest.raises(ConfigurationError, match="Lambda_b0"):
        table.pid("Lambda_bb0")


def test_antiparticle(table):
    assert table.antiparticle(521) == -521
    assert table.antiparticle(443) == 443
    assert table.antiparticle(22) == 22


def test_lhcb_alias():
    assert lhcb_alias("anti-Lambda_c-") == "Lambda_c~-"
    assert lhcb_alias("K_S0") == "KS0"
    assert lhcb_alias("pi+") is None
