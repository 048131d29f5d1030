"""Decay-descriptor parser: trees, marks, cc, conjugation, errors with did-you-mean."""
import numpy as np
import pytest

from algorithms.common.descriptors import DecayNode, flatten, parse_descriptor
from algorithms.common.particle_table import ConfigurationError


def test_bu_jpsik():
    d = parse_descriptor("[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc")
    assert d.cc
    h = d.head
    assert h.pid == 521 and [x.pid for x in h.daughters] == [443, 321]
    assert [x.pid for x in h.daughters[0].daughters] == [-13, 13]
    assert [n.pid for n in h.nodes()] == [521, 443, 321, -13, 13]
    assert not any(n.marked for n in h.nodes())
    assert str(d) == "[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc"


def test_lb_lcmunu():
    d = parse_descriptor("[Lambda_b0 -> (Lambda_c+ -> p+ K- pi+) mu- anti-nu_mu]cc")
    assert [n.pid for n in d.head.nodes()] == [5122, 4122, 13, -14, 2212, -321, 211]
    conj = d.head.conjugate()
    assert [n.pid for n in conj.nodes()] == [-5122, -4122, -13, 14, -2212, 321, -211]
    assert conj.conjugate() == DecayNode(d.head.pid, conj.conjugate().name, conj.conjugate().daughters)
    assert [n.pid for n in conj.conjugate().nodes()] == [n.pid for n in d.head.nodes()]


def test_marks_and_kstar():
    d = parse_descriptor("[B0 -> ^(K*(892)0 -> ^K+ pi-) ^gamma]cc")
    marked = d.head.marked_nodes()
    assert [n.pid for n in marked] == [313, 22, 321]
    assert d.head.daughters[0].marked and not d.head.marked
    assert str(d) == "[B0 -> ^(K*(892)0 -> ^K+ pi-) ^gamma]cc"
    assert parse_descriptor(str(d)) == d
    assert [n.marked for n in d.head.conjugate().nodes()] == [n.marked for n in d.head.nodes()]


def test_no_cc_and_alternatives():
    d = parse_descriptor("B+ -> (J/psi(1S) -> mu+ mu-) K+")
    assert not d.cc and len(d.alternatives()) == 1
    assert len(parse_descriptor("[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc").alternatives()) == 2
    # self-conjugate decay: cc adds nothing
    assert len(parse_descriptor("[J/psi(1S) -> mu+ mu-]cc").alternatives()) == 1


def test_arrow_variants_and_names_with_parentheses():
    d = parse_descriptor("[B0 ==> (psi(2S) --> mu+ mu-) (KS0 -> pi+ pi-)]cc")
    assert [n.pid for n in d.head.nodes()] == [511, 100443, 310, -13, 13, 211, -211]


def test_unknown_name_did_you_mean():
    with pytest.raises(ConfigurationError, match=r"'Jpsi\(1S\)'.*did you mean.*J/psi\(1S\)"):
        parse_descriptor("[B+ -> (Jpsi(1S) -> mu+ mu-) K+]cc")
    with pytest.raises(ConfigurationError, match="did you mean.*'K\\+'"):
        parse_descriptor("[B+ -> (J/psi(1S) -> mu+ mu-) Kp+]cc")


@pytest.mark.parametrize("text,match", [
    ("[B+ -> (J/psi(1S) -> mu+ mu-) K+", "end of descriptor"),
    ("[B+ -> (J/psi(1S) -> mu+ mu-) K+]xx", "unexpected"),
    ("B+ -> (J/psi(1S) -> mu+ mu- K+", r"missing '\)'"),
    ("B+ K+", "expected '->'"),
    ("B+ -> ", "no daughters"),
    ("[B+ -> [J/psi(1S)]cc K+]cc", "outermost"),
    ("B+ -> (J/psi(1S) -> mu+ mu+) K+", "charge is not conserved"),
    ("", "empty"),
])
def test_syntax_errors(text, match):
    with pytest.raises(ConfigurationError, match=match):
        parse_descriptor(text)


def test_forbidden_decay():
    with pytest.raises(ConfigurationError, match="kinematically forbidden"):
        flatten(parse_descriptor("D0 -> K+ K- K+ K-").head)
    with pytest.raises(ConfigurationError, match="kinematically forbidden"):
        flatten(parse_descriptor("B+ -> (J/psi(1S) -> (D0 -> K- pi+) (D~0 -> K+ pi-)) K+").head)


def test_stable_particle_cannot_decay():
    with pytest.raises(ConfigurationError, match="stable"):
        flatten(parse_descriptor("B+ -> (p+ -> pi+ pi0) pi0").head)


def test_flat_tree_and_mass_ranges():
    t = flatten(parse_descriptor("[B0 -> (K*(892)0 -> K+ pi-) gamma]cc").head)
    assert list(t.parent) == [-1, 0, 0, 1, 1]
    assert list(t.first_daughter) == [1, 3, -1, -1, -1] and list(t.n_daughters) == [2, 2, 0, 0, 0]
    kst = 1
    # Breit-Wigner range: +-5 Gamma, raised to the K pi threshold
    assert t.width[kst] == pytest.approx(47.1, rel=0.1)
    assert t.mlo[kst] == pytest.approx(max(t.mass[kst] - 5 * t.width[kst], t.mass[3] + t.mass[4]), rel=1e-6)
    assert t.mhi[kst] == pytest.approx(t.mass[kst] + 5 * t.width[kst])
    # narrow particles have a fixed mass
    assert t.mlo[0] == t.mhi[0] == t.mass[0]
    assert np.all(t.mlo[2:] == t.mass[2:])


def test_bw_truncated_by_parent():
    # phi(1020) -> K+ K- just above threshold: the phi range starts above 2 mK
    t = flatten(parse_descriptor("B_s0 -> (phi(1020) -> K+ K-) (phi(1020) -> K+ K-)").head, bw_cutoff=20)
    mk = t.mass[3]
    assert t.mlo[1] > 2 * mk and t.mlo[2] > 2 * mk
    # a resonance whose BW tail exceeds what its parent allows is capped
    t = flatten(parse_descriptor("D0 -> (K*(892)~0 -> K- pi+) pi0").head, bw_cutoff=10)
    assert t.mhi[1] < t.mass[0] - t.mass[2]
