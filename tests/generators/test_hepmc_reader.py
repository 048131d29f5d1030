"""HepMC input: scan, raw conversion, Lamarr-like selection, grouping, units, reproducibility and
corrupt input, on the real LHCb Gauss files of ../shared/data/hepmc/DSt_Pi (skipped if absent)."""
from __future__ import annotations

import gzip
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pyhepmc = pytest.importorskip("pyhepmc")

from framework import InputError, hookimpl  # noqa: E402
from algorithms.generators import hepmc as H  # noqa: E402
from algorithms.generators.truth_builder import (  # noqa: E402
    C_MM_PER_NS, PHYSICAL_STATUSES, RawCollision, assemble_truth, kept_species, kept_species_fast,
    nearest_kept_ancestor, select_truth, select_truth_batch)

SHARED = Path(os.environ.get("FLASHSIM_SHARED", Path(__file__).resolve().parents[2] / ".." / "shared")).resolve()
DST_DIR = SHARED / "data" / "hepmc" / "DSt_Pi"
FILES = [str(DST_DIR / f"evt{i}.mc2") for i in range(10)]
GLOB = str(DST_DIR / "evt*.mc2")
N_COLLISIONS = [3, 1, 1, 1, 2, 6, 3, 1, 5, 3]

needs_shared = pytest.mark.skipif(
    not all(Path(f).is_file() for f in FILES),
    reason=f"needs the LHCb HepMC files of ../shared ({DST_DIR} not found; set FLASHSIM_SHARED)")


@hookimpl
def flashsim_register_components(registry):
    registry.add_algorithm(H.HepMCReader)


def make_app(reader_props, **app_props):
    from framework.appmgr import ApplicationMgr
    from framework.options import AlgSpec, JobOptions, Where
    from framework.registry import Plugins

    opts = JobOptions(app={"Output": "", "OutputLevel": "WARNING", **app_props},
                      algorithms=[AlgSpec("HepMCReader", "Generation", Where("test"), dict(reader_props))])
    app = ApplicationMgr(opts, plugins=Plugins(extra_plugins=[sys.modules[__name__]], autoload=False))
    app.initialize()
    return app


def run_events(app, numbers, batch):
    """Truth collections of `numbers`, processed in batches of `batch`, as per-event dicts."""
    out = {k: [] for k in ("Header", "Collisions", "Vertices", "Particles")}
    for start in range(0, len(numbers), batch):
        store = app.run_batch(np.asarray(numbers[start:start + batch], dtype=np.int64))
        for key, path in (("Header", "/Event/Gen/Header"), ("Collisions", "/Event/Gen/Collisions"),
                          ("Vertices", "/Event/MC/Vertices"), ("Particles", "/Event/MC/Particles")):
            coll = store.get(path)
            for i in range(coll.n_events):
                out[key].append(coll.event(i))
    return out


def read_all(path):
    with pyhepmc.open(path) as f:
        return list(f)


# ------------------------------------------------------------------------------------------
@needs_shared
def test_scan_agrees_with_pyhepmc():
    total = 0
    for path in FILES:
        ix = H.scan_hepmc_file(path)
        events = read_all(path)
        assert ix.format == "hepmc2" and ix.problem is None and ix.has_end_marker
        assert ix.good_events == len(events) == ix.n_declared
        assert list(ix.declared_vertices) == [len(e.vertices) for e in events]
        assert list(ix.event_numbers) == [e.event_number for e in events]
        total += len(events)
    assert total == 26


@needs_shared
def test_raw_conversion_sees_what_pyhepmc_sees():
    """Before selection: same particles, vertices, links, units as pyhepmc's object API."""
    for path in (FILES[0], FILES[7]):
        for ev in read_all(path):
            raw = H.genevent_to_raw(ev)
            parts = ev.particles
            assert raw.n == len(parts)
            assert raw.extra["n_vertices"] == len(ev.vertices)
            prod = np.array([p.production_vertex.id if p.production_vertex and p.production_vertex.id < 0 else 0
                             for p in parts])
            end = np.array([p.end_vertex.id if p.end_vertex else 0 for p in parts])
            np.testing.assert_array_equal(raw.extra["prod_vertex"], np.where(prod < 0, -prod - 1, -1))
            np.testing.assert_array_equal(raw.extra["end_vertex"], np.where(end < 0, -end - 1, -1))
            np.testing.assert_array_equal(raw.pid, [p.pid for p in parts])
            np.testing.assert_array_equal(raw.status, [p.status for p in parts])
            np.testing.assert_allclose(raw.E, [p.momentum.e for p in parts], rtol=1e-15)
            vpos = np.array([[v.position.x, v.position.y, v.position.z, v.position.t] for v in ev.vertices])
            np.testing.assert_allclose(raw.extra["vertex_pos"][:, :3], vpos[:, :3], rtol=1e-15)
            np.testing.assert_allclose(raw.extra["vertex_pos"][:, 3], vpos[:, 3] / C_MM_PER_NS, rtol=1e-15)
            # first parent = first incoming particle of the production vertex
            for i in range(0, raw.n, 7):
                pv = parts[i].production_vertex
                ins = [q.id for q in pv.particles_in] if pv is not None and pv.id < 0 else []
                assert raw.parent[i] == (min(ins) - 1 if ins else -1)


@needs_shared
def test_selection_rule():
    n_signal = 0
    for path in FILES:
        for ev in read_all(path):
            raw = H.genevent_to_raw(ev)
            tc = select_truth(raw)
            expected = np.isin(raw.status, PHYSICAL_STATUSES) & kept_species(raw.pid)
            np.testing.assert_array_equal(tc.selected, np.flatnonzero(expected))
            apid = np.abs(tc.particles["pid"])
            assert not np.any((apid <= 8) | (apid == 21) | ((apid > 1000) & (apid < 10000) & (apid % 100 < 10)))
            assert set(np.unique(tc.particles["status"])) <= set(PHYSICAL_STATUSES.tolist())
            assert np.all(tc.particles["is_signal"] == (tc.particles["status"] == 889))
            n_signal += int(tc.particles["is_signal"].sum())
            # dropped: documentation (3) and everything partonic
            assert not np.any(tc.particles["status"] == 3)
            # mother = nearest kept ancestor, checked against a naive walk on the raw record
            keep = np.zeros(raw.n, bool)
            keep[tc.selected] = True
            for j in range(0, tc.n_particles, 5):
                a = raw.parent[tc.selected[j]]
                while a >= 0 and not keep[a]:
                    a = raw.parent[a]
                m = tc.particles["mother"][j]
                assert (a == -1 and m == -1) or (m >= 0 and tc.selected[m] == a)
            # origin vertex is the particle's true production point
            prod = raw.extra["prod_vertex"][tc.selected]
            ov = tc.particles["origin_vertex"]
            mine = np.stack([tc.vertices[c][ov] for c in "xyzt"], axis=1)
            np.testing.assert_allclose(mine, raw.extra["vertex_pos"][prod], rtol=0, atol=1e-12)
            assert tc.vertices["type"][0] == 1 and np.all(tc.vertices["type"][1:] == 2)
    assert n_signal == 10  # one B signal (status 889) per bunch crossing


def test_nearest_kept_ancestor_small():
    #  0 -> 1 -> 2 -> 3 ; 1 -> 4 ; 5 alone
    parent = np.array([-1, 0, 1, 2, 1, -1])
    keep = np.array([True, False, True, True, True, True])
    np.testing.assert_array_equal(nearest_kept_ancestor(parent, keep), [-1, 0, 0, 2, 0, -1])


@needs_shared
def test_grouping_file_26_collisions_in_10_crossings():
    app = make_app({"Input": [GLOB]}, EvtMax=-1)
    assert app.algorithms[0].available_events() == 10 and app.events_requested == 10
    out = run_events(app, list(range(10)), 4)
    assert [int(h["n_collisions"][0]) for h in out["Header"]] == N_COLLISIONS
    assert [len(c["x"]) for c in out["Collisions"]] == N_COLLISIONS
    assert all(int(h["signal_trials"][0]) == 1 and int(h["ntracks_override"][0]) == -1 for h in out["Header"])
    nsig = [int(p["is_signal"].sum()) for p in out["Particles"]]
    assert nsig == [1] * 10
    # cross references stay within each event, collision indices consistent
    for p, v, c in zip(out["Particles"], out["Vertices"], out["Collisions"]):
        nv, npart = len(v["x"]), len(p["pid"])
        assert np.all((p["origin_vertex"] >= 0) & (p["origin_vertex"] < nv))
        assert np.all((p["end_vertex"] >= -1) & (p["end_vertex"] < nv))
        assert np.all((p["mother"] >= -1) & (p["mother"] < npart))
        assert np.all(v["collision"][p["origin_vertex"]] == p["collision"])
        pvs = np.flatnonzero(v["type"] == 1)
        assert len(pvs) == len(c["x"])
        np.testing.assert_array_equal(v["z"][pvs], c["z"])
    mean = np.mean([len(p["pid"]) for p in out["Particles"]])
    assert 900 < mean < 1150  # Lamarr reports ~1012 MCParticles per DSt_Pi event


@needs_shared
def test_grouping_event():
    app = make_app({"Input": FILES, "Grouping": "event"}, EvtMax=-1)
    assert app.events_requested == 26
    out = run_events(app, list(range(26)), 10)
    assert all(int(h["n_collisions"][0]) == 1 for h in out["Header"])
    # the same particles as Grouping=file, regrouped
    app_f = make_app({"Input": FILES}, EvtMax=-1)
    out_f = run_events(app_f, list(range(10)), 10)
    pz_event = np.concatenate([p["pz"] for p in out["Particles"]])
    pz_file = np.concatenate([p["pz"] for p in out_f["Particles"]])
    np.testing.assert_array_equal(pz_event, pz_file)


@needs_shared
def test_four_momentum_conservation_and_units():
    n_checked = 0
    for path in FILES[:5]:
        for ev in read_all(path):
            raw = H.genevent_to_raw(ev, "ns")  # LHCb Gauss writes vertex times in ns
            tc = select_truth(raw)
            P = tc.particles
            n = tc.n_particles
            if n == 0:
                continue
            four = np.stack([P["px"], P["py"], P["pz"], P["E"]], axis=1)
            has_m = P["mother"] >= 0
            sums = np.zeros((n, 4))
            np.add.at(sums, P["mother"][has_m], four[has_m])
            nd = np.bincount(P["mother"][has_m], minlength=n)
            # all generator children kept <=> number of kept daughters == number of generator children
            complete = (P["end_vertex"] >= 0) & (nd > 0) & (nd == raw.children_count[tc.selected])
            diff = np.abs(sums[complete] - four[complete]).max(axis=1)
            assert np.all(diff <= 1e-6 * P["E"][complete] + 1e-6), diff.max()
            n_checked += int(complete.sum())
            # units: MeV (pi+ mass), ns (flight distance = beta c dt)
            pi = np.abs(P["pid"]) == 211
            np.testing.assert_allclose(P["mass"][pi], 139.57, atol=0.01)
            dec = P["end_vertex"] >= 0
            V = tc.vertices
            dr = np.sqrt(sum((V[c][P["end_vertex"][dec]] - V[c][P["origin_vertex"][dec]]) ** 2 for c in "xyz"))
            dt = V["t"][P["end_vertex"][dec]] - V["t"][P["origin_vertex"][dec]]
            beta = np.sqrt(P["px"] ** 2 + P["py"] ** 2 + P["pz"] ** 2)[dec] / P["E"][dec]
            long = dr > 1e-3
            np.testing.assert_allclose(dr[long], beta[long] * C_MM_PER_NS * dt[long], rtol=1e-5)
    assert n_checked > 500


@needs_shared
def test_time_unit_detection(tmp_path):
    """LHCb's Gauss files carry vertex times in ns (not HepMC's mm/c): flight distance = beta c dt
    holds with t in ns; a file rewritten with times in mm/c is recognised as such."""
    unit, ratio, n = H.detect_time_unit(read_all(FILES[0]))
    assert unit == "ns" and n >= 5 and abs(ratio / C_MM_PER_NS - 1) < 1e-6
    app = make_app({"Input": [GLOB]}, EvtMax=-1)
    assert app.algorithms[0]._time_unit == "ns"
    events = read_all(FILES[4])
    for ev in events:
        ev.weights = [1.0]  # Gauss events carry 1 or 2 weights; HepMC3 files need one count per file
        for v in ev.vertices:
            p = v.position
            v.position = pyhepmc.FourVector(p.x, p.y, p.z, p.t * C_MM_PER_NS)
    mmc = tmp_path / "evt4_mmc.hepmc3"
    with pyhepmc.open(mmc, "w") as w:
        for ev in events:
            w.write(ev)
    unit, ratio, n = H.detect_time_unit(read_all(mmc))
    assert unit == "mm" and abs(ratio - 1) < 1e-3  # (HepMC3 writer precision)
    app_mm = make_app({"Input": [str(mmc)]}, EvtMax=-1)
    assert app_mm.algorithms[0]._time_unit == "mm"
    a = run_events(app, [4], 1)["Vertices"][0]
    b = run_events(app_mm, [0], 1)["Vertices"][0]
    np.testing.assert_allclose(b["t"], a["t"], rtol=1e-4, atol=1e-12)
    assert a["t"].max() > 1.0  # ns: a long-lived decay far downstream


@needs_shared
def test_reproducible_across_batch_sizes_and_shards():
    one = run_events(make_app({"Input": [GLOB]}, EvtMax=-1), list(range(10)), 10)
    threes = run_events(make_app({"Input": [GLOB]}, EvtMax=-1), list(range(10)), 3)
    shard = run_events(make_app({"Input": [GLOB]}, EvtMax=-1), list(range(6, 10)), 2)
    backwards = run_events(make_app({"Input": [GLOB]}, EvtMax=-1), [9, 3, 0, 8], 1)
    for key in one:
        for a, b in zip(one[key], threes[key]):
            assert a.keys() == b.keys()
            for col in a:
                np.testing.assert_array_equal(a[col], b[col])
        for a, b in zip(one[key][6:], shard[key]):
            for col in a:
                np.testing.assert_array_equal(a[col], b[col])
        for i, b in zip([9, 3, 0, 8], backwards[key]):
            for col in b:
                np.testing.assert_array_equal(one[key][i][col], b[col])


@needs_shared
def test_hepmc3_and_gzip_inputs_give_the_same_truth(tmp_path):
    events = read_all(FILES[4])
    h3 = tmp_path / "evt4.hepmc3"
    with pyhepmc.open(h3, "w") as w:
        for e in events:
            e.weights = [1.0]  # Gauss events carry 1 or 2 weights; HepMC3 files need one count per file
            w.write(e)
    gz = tmp_path / "evt4.mc2.gz"
    with open(FILES[4], "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    ref = run_events(make_app({"Input": [FILES[4]]}), [0], 1)["Particles"][0]
    for path in (h3, gz):
        ix = H.scan_hepmc_file(str(path))
        assert ix.good_events == 2 and ix.problem is None
        got = run_events(make_app({"Input": [str(path)]}), [0], 1)["Particles"][0]
        for col in ref:
            np.testing.assert_allclose(got[col], ref[col], rtol=1e-14)
    # random access in HepMC3 and compressed files (seek / skip by reading)
    src = H.HepMCSource([str(h3), str(gz)])
    assert src.read(0, 1).event_number == events[1].event_number
    assert src.read(0, 0).event_number == events[0].event_number
    assert src.read(1, 1).event_number == events[1].event_number


# ------------------------------------------------------------------------------------------
# corrupt input
@needs_shared
def test_truncated_file_keeps_the_events_before(tmp_path):
    data = Path(FILES[5]).read_bytes()  # 6 collisions
    bad = tmp_path / "evt5_truncated.mc2"
    bad.write_bytes(data[:500000])  # cut inside its 6th GenEvent
    ix = H.scan_hepmc_file(str(bad))
    assert ix.n_declared == 6 and ix.good_events == 5
    assert "event 5" in ix.problem and f"line {ix.lines[5]}" in ix.problem
    app = make_app({"Input": [FILES[4], str(bad), FILES[6]]}, EvtMax=-1)
    alg = app.algorithms[0]
    assert alg.counters["corrupt files"].entries == 1
    out = run_events(app, [0, 1, 2], 3)
    assert [int(h["n_collisions"][0]) for h in out["Header"]] == [2, 5, 3]
    ref = run_events(make_app({"Input": [FILES[5]]}), [0], 1)
    keep = ref["Particles"][0]["collision"] < 5
    np.testing.assert_array_equal(out["Particles"][1]["pz"], ref["Particles"][0]["pz"][keep])


@needs_shared
def test_garbled_event_is_reported_and_file_ends_there(tmp_path, capsys):
    text = Path(FILES[5]).read_text()
    lines = text.split("\n")
    e_lines = [i for i, line in enumerate(lines) if line.startswith("E ")]
    target = next(i for i in range(e_lines[3] + 10, e_lines[4]) if lines[i].startswith("P "))
    lines[target] = " ".join(lines[target].split()[:4])  # a P line cut short inside GenEvent 3
    bad = tmp_path / "evt5_garbled.mc2"
    bad.write_text("\n".join(lines))
    app = make_app({"Input": [str(bad)], "Grouping": "event"}, EvtMax=-1)
    assert app.events_requested == 6  # the scan cannot see garbled numbers
    out = run_events(app, list(range(6)), 4)
    alg = app.algorithms[0]
    assert [int(h["n_collisions"][0]) for h in out["Header"]] == [1, 1, 1, 0, 0, 0]
    assert alg.counters["corrupt files"].entries == 1
    assert alg.counters["unreadable GenEvents"].entries == 3
    assert alg.counters["GenEvents read"].entries == 3
    msg = capsys.readouterr()
    assert "event 3" in (msg.out + msg.err) and str(bad) in (msg.out + msg.err)


def test_not_hepmc_and_malformed_header(tmp_path):
    junk = tmp_path / "junk.mc2"
    junk.write_text("hello\nworld\n")
    with pytest.raises(InputError, match="junk.mc2: line 1: not a HepMC2/HepMC3"):
        H.scan_hepmc_file(str(junk))
    bad = tmp_path / "bad.mc2"
    bad.write_text("\nHepMC::Version 2.06.09\nHepMC::IO_GenEvent-START_EVENT_LISTING\nE 1 -1 zero\n")
    with pytest.raises(InputError, match=r"bad.mc2: line 4: malformed event header"):
        H.scan_hepmc_file(str(bad))


def test_missing_input_is_a_configuration_error(tmp_path):
    from framework import ConfigurationError

    with pytest.raises(ConfigurationError, match="matches no file"):
        H.expand_inputs([str(tmp_path / "nothing*.mc2")])
    with pytest.raises(ConfigurationError, match="does not exist"):
        H.expand_inputs([str(tmp_path / "nothing.mc2")])
    with pytest.raises(ConfigurationError, match="Grouping"):
        H.HepMCReader("r", Grouping="files")


# ------------------------------------------------------------------------------------------
def assert_same_truth(got, ref):
    assert set(got) == set(ref)
    for key in ref:
        a, b = got[key], ref[key]
        np.testing.assert_array_equal(a.offsets, b.offsets, err_msg=key)
        assert a.names == b.names, key
        for col in b.names:
            assert a[col].dtype == b[col].dtype, (key, col)
            np.testing.assert_array_equal(a[col], b[col], err_msg=f"{key}.{col}")


def random_raw(rng, n):
    """A random acyclic generator record: beams, partons, a signal-at-rest subtree, shared end vertices."""
    parent = np.array([-1 if i < 2 or rng.random() < 0.05 else rng.integers(0, i) for i in range(n)], np.int64)
    status = rng.choice([1, 2, 3, 777, 889, 998, 999, 4], n, p=[.4, .2, .1, .1, .05, .03, .1, .02]).astype(np.int32)
    pid = rng.choice([211, -321, 2212, 22, 11, -13, 21, 2, 2203, 1000010020, 990, 9902210, 12], n).astype(np.int32)
    end_key = np.where(rng.random(n) < 0.4, rng.integers(0, max(n // 3, 1), n), -1)
    is_beam = np.zeros(n, bool)
    is_beam[:2] = True
    return RawCollision(pid=pid, status=status, px=rng.normal(0, 1e3, n), py=rng.normal(0, 1e3, n),
                        pz=rng.normal(0, 1e4, n), E=rng.exponential(1e4, n), mass=rng.exponential(100, n),
                        parent=parent, end_key=end_key, end_pos=rng.normal(0, 1, (n, 4)), pv=rng.normal(0, 1, 4),
                        is_beam=is_beam, pv_children=rng.random(n) < 0.3)


def test_batched_selection_equals_per_collision_path_random_trees():
    rng = np.random.default_rng(11)
    events = [[random_raw(rng, int(rng.integers(0, 300))) for _ in range(int(rng.integers(0, 4)))]
              for _ in range(12)]
    events[3] = []  # an event without collision
    numbers = np.arange(100, 112)
    ref = assemble_truth([[select_truth(r) for r in ev] for ev in events], numbers)
    assert len(ref["Particles"]) > 100 and len(ref["Vertices"]) > 30
    assert_same_truth(select_truth_batch(events, PHYSICAL_STATUSES, numbers), ref)
    statuses = np.array([1, 999], np.int32)
    assert_same_truth(select_truth_batch(events, statuses, numbers),
                      assemble_truth([[select_truth(r, statuses) for r in ev] for ev in events], numbers))
    pids = np.concatenate([r.pid for ev in events for r in ev])
    np.testing.assert_array_equal(kept_species_fast(pids), kept_species(pids))
    cyclic = random_raw(rng, 20)
    cyclic.parent[5], cyclic.parent[6] = 6, 5
    with pytest.raises(ValueError, match="cycle"):
        select_truth_batch([[cyclic]])


@needs_shared
def test_batched_selection_equals_per_collision_path_lhcb_files():
    events = [[H.genevent_to_raw(ev, "ns") for ev in read_all(p)] for p in FILES]
    numbers = np.arange(10)
    assert_same_truth(select_truth_batch(events, PHYSICAL_STATUSES, numbers),
                      assemble_truth([[select_truth(r) for r in ev] for ev in events], numbers))
