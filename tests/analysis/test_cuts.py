"""Cut grammar: parse/evaluate against numpy expressions, errors pointing at the token, no eval."""
import numpy as np
import pytest

from algorithms.analysis.cuts import CombinationView, CutError, ParticleView, compile_cut, tokenize


def particles(n=500, seed=1):
    rng = np.random.default_rng(seed)
    px, py = rng.normal(0, 1500, n), rng.normal(0, 1500, n)
    pz = rng.uniform(5000, 80000, n)
    m = np.where(rng.uniform(size=n) < 0.5, 493.677, 139.57)
    E = np.sqrt(px**2 + py**2 + pz**2 + m**2)
    cols = {
        "pid": np.where(rng.uniform(size=n) < 0.5, 321, -321).astype(np.int32), "charge": np.ones(n, np.int8),
        "p4": np.stack([px, py, pz, E], 1), "m": m,
        "PIDK": rng.normal(0, 10, n).astype(np.float32), "PIDp": rng.normal(0, 10, n).astype(np.float32),
        "PIDmu": rng.normal(0, 5, n).astype(np.float32), "PIDe": rng.normal(0, 5, n).astype(np.float32),
        "ProbNNk": rng.uniform(size=n).astype(np.float32), "ProbNNpi": rng.uniform(size=n).astype(np.float32),
        "isMuon": rng.uniform(size=n) < 0.3, "hasRich": rng.uniform(size=n) < 0.9,
        "mipchi2": rng.exponential(20, n), "mip": rng.exponential(0.1, n), "ipchi2": rng.exponential(20, n),
        "trchi2dof": rng.uniform(0, 4, n).astype(np.float32), "ghostprob": rng.uniform(0, 0.5, n).astype(np.float32),
        "trtype": np.full(n, 3, np.int8),
        "vchi2": rng.exponential(3, n), "vndof": rng.integers(1, 4, n).astype(np.int32),
        "dira": 1 - rng.exponential(1e-3, n), "fdchi2": rng.exponential(100, n),
        "vtx": rng.normal(0, 10, (n, 3)),
    }
    return cols


def test_particle_cuts_match_numpy():
    c = particles()
    v = ParticleView(c)
    px, py, pz, E = c["p4"].T
    pt = np.hypot(px, py)
    p = np.sqrt(px**2 + py**2 + pz**2)
    eta = np.arctanh(pz / p)
    cases = {
        "PT > 500 and PIDK > 0": (pt > 500) & (c["PIDK"] > 0),
        "PT > 0.5*GeV and PIDK > 0": (pt > 500) & (c["PIDK"] > 0),
        "isMuon": c["isMuon"],
        "not isMuon or hasRich": ~c["isMuon"] | c["hasRich"],
        "~ISMUON & HASRICH": ~c["isMuon"] & c["hasRich"],
        "MIPCHI2DV(PRIMARY) > 9 and MIPDV(PRIMARY) > 0.05*mm": (c["mipchi2"] > 9) & (c["mip"] > 0.05),
        "BPVIPCHI2() < 25": c["ipchi2"] < 25,
        "(PIDK - PIDp) > 2 * 1.5 or abs(PIDmu) < 1": ((c["PIDK"] - c["PIDp"]) > 3.0) | (np.abs(c["PIDmu"]) < 1),
        "P > 10000 and ETA > 2 and ETA < 5 and PHI > -1": (p > 1e4) & (eta > 2) & (eta < 5)
        & (np.arctan2(py, px) > -1),
        "ABSID == 321 and ID > 0": c["pid"] > 0,
        "Q == 1 and TRCHI2DOF < 3 and TRGHOSTPROB < 0.3": (c["trchi2dof"] < 3) & (c["ghostprob"] < 0.3),
        "PROBNNk * (1 - ProbNNpi) > 0.2": c["ProbNNk"] * (1 - c["ProbNNpi"]) > 0.2,
        "ADMASS('K+') < 1": np.abs(c["m"] - 493.677) < 1,
        "in_range(2, ETA, 4.5)": (eta >= 2) & (eta <= 4.5),
        "M > 200 and -PIDK >= -3": (c["m"] > 200) & (-c["PIDK"] >= -3),
        "PT > 500 and (PIDK > 5 or PIDp > 5) and not (TRTYPE != 3)": (pt > 500) & ((c["PIDK"] > 5)
                                                                                 | (c["PIDp"] > 5)),
        "ALL": np.ones(len(pt), bool),
        "": np.ones(len(pt), bool),
        "NONE": np.zeros(len(pt), bool),
        "VFASPF(VCHI2/VDOF) < 3 and BPVDIRA > 0.999 and BPVVDCHI2 > 50 and VFASPF(VZ) > 0":
            (c["vchi2"] / c["vndof"] < 3) & (c["dira"] > 0.999) & (c["fdchi2"] > 50) & (c["vtx"][:, 2] > 0),
    }
    for text, want in cases.items():
        got = compile_cut(text, "mother")(v)
        assert got.dtype == bool and got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=text)
        assert 0 < want.sum() < len(want) or text in ("ALL", "", "NONE")


def test_combination_cuts():
    rng = np.random.default_rng(2)
    a, b = particles(300, 3), particles(300, 4)
    p4 = a["p4"] + b["p4"]
    am = np.sqrt(p4[:, 3] ** 2 - np.sum(p4[:, :3] ** 2, 1))
    d = rng.exponential(0.3, 300)
    dc = rng.exponential(5, 300)
    view = CombinationView(p4, [ParticleView(a), ParticleView(b)], lambda: (d, dc))
    pt_a, pt_b = np.hypot(*a["p4"][:, :2].T), np.hypot(*b["p4"][:, :2].T)
    cases = {
        "ADAMASS('B+') < 3000 and ADOCAMAX('') < 0.5": (np.abs(am - 5279.34) < 3000) & (d < 0.5),
        "AM > 2*GeV and ACUTDOCA(0.2, '') and ADOCACHI2MAX('') < 9": (am > 2000) & (d < 0.2) & (dc < 9),
        "AMINCHILD(PT) > 800": np.minimum(pt_a, pt_b) > 800,
        "AMAXCHILD(MIPCHI2DV(PRIMARY)) > 16": np.maximum(a["mipchi2"], b["mipchi2"]) > 16,
        "ACHILD(PIDK, 2) > 0 and APT > 1000": (b["PIDK"] > 0) & (np.hypot(*p4[:, :2].T) > 1000),
    }
    for text, want in cases.items():
        np.testing.assert_array_equal(compile_cut(text, "combination")(view), want, err_msg=text)
    mview = ParticleView(a, [ParticleView(a), ParticleView(b)])
    np.testing.assert_array_equal(compile_cut("CHILD(PT, 2) > 1000", "mother")(mview), pt_b > 1000)


@pytest.mark.parametrize("text,context,column,fragment", [
    ("PT > 500 and PIDX > 0", "particle", 14, "unknown functor 'PIDX' at column 14 (did you mean 'PIDK'?)"),
    ("PT > 500 and", "particle", 13, "expected a number, a functor or '('"),
    ("PT and PIDK > 0", "particle", 1, "operand of 'and' must be a condition"),
    ("(PT > 3", "particle", 8, "expected ')'"),
    ("PT > 3)", "particle", 7, "unbalanced ')'"),
    ("VCHI2 < 3", "particle", 1, "only be used inside VFASPF"),
    ("AM < 3", "particle", 1, "only be used in a CombinationCut"),
    ("PT > 3", "combination", 1, "only be used on particles"),
    ("ADMASS('Jpsi') < 3", "particle", 8, "unknown particle name 'Jpsi'"),
    ("PT > 3 > 4", "particle", 8, "cannot be chained"),
    ("PT = 3", "particle", 4, "'=' is not an operator"),
    ("PT", "particle", 1, "not a condition"),
    ("MIPCHI2DV(SECONDARY) > 9", "particle", 11, "expects PRIMARY"),
    ("ADMASS(3) < 3", "particle", 8, "quoted particle name"),
    ("PT > 5 $ 3", "particle", 8, "unexpected character '$'"),
    ("__import__('os') > 1", "particle", 1, "unknown functor '__import__'"),
    ("PT > 'x'", "particle", 6, "only allowed as a functor argument"),
    ("isMuon > 1", "particle", 1, "left side of '>' must be a number"),
])
def test_errors_point_at_the_token(text, context, column, fragment):
    with pytest.raises(CutError) as info:
        compile_cut(text, context)
    msg = str(info.value)
    assert fragment in msg, msg
    assert f"at column {column}" in msg, msg
    assert msg.startswith(f'"{text}"')
    caret_line = msg.splitlines()[-1]
    assert caret_line.index("^") - 4 == column - 1


def test_kind_check_and_no_eval(monkeypatch):
    with pytest.raises(CutError, match="composite particles only"):
        compile_cut("BPVDIRA > 0.9").check_kind(True, "K+")
    with pytest.raises(CutError, match="tracks only"):
        compile_cut("PIDK > 0").check_kind(False, "B+")
    import builtins

    def boom(*a, **k):
        raise AssertionError("eval must not be used")

    monkeypatch.setattr(builtins, "eval", boom)
    c = compile_cut("PT > 1 and abs(PIDK) < 1e3 and sqrt(P) > 0 and max(PT, P) >= min(PT, P)")
    assert c(ParticleView(particles(10))).all()
    assert [t.kind for t in tokenize("PT>1e3")] == ["NAME", "OP", "NUM", "END"]


def test_nan_values_fail_comparisons():
    c = particles(5)
    c["PIDK"] = np.full(5, np.nan, np.float32)
    assert not compile_cut("PIDK > -1e9")(ParticleView(c)).any()
    assert compile_cut("not (PIDK > 0)")(ParticleView(c)).all()
