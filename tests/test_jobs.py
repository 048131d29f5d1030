"""The shipped options files run end to end through the real application manager."""
import io

import numpy as np
import pytest
import uproot

from framework.appmgr import ApplicationMgr
from framework.options import load_options
from framework.registry import Plugins

from .conftest import REPO, shared_path

OPTIONS = REPO / "options"


def run(path, *overrides):
    app = ApplicationMgr(load_options([path]), list(overrides) + ["ApplicationMgr.ProgressInterval=0"], Plugins(),
                         stream=io.StringIO())
    return app, app.run()


def arrays(path, tree):
    with uproot.open(path) as f:
        return f[tree].arrays(library="np")


@pytest.fixture(scope="module")
def flagship(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flagship")
    out = tmp / "flag.root"
    app, summary = run(OPTIONS / "Bu2JpsiK_pgun.yaml", "ApplicationMgr.EvtMax=1500", f"ApplicationMgr.Output={out}")
    return out, app, summary, tmp


def test_flagship_ntuples_physics(flagship):
    out, app, summary, _ = flagship
    assert summary["events_failed"] == 0
    dt = arrays(out, "DecayTree")
    mc = arrays(out, "MCDecayTree")
    assert len(mc["B_TRUEID"]) == 1500
    n = len(dt["B_M"])
    assert 150 < n < 1500
    # the B+ mass peak: robust width of the plain vertex-fit mass and of the J/psi-constrained DTF mass
    q = np.percentile(dt["B_M"], [16, 50, 84])
    assert abs(q[1] - 5279.3) < 15 and 10 < (q[2] - q[0]) / 2 < 80
    good = dt["B_DTF_PV_JpsiM_status"] == 0
    assert good.mean() > 0.95 and np.all(np.isfinite(dt["B_DTF_PV_JpsiM_M"][good]))
    qd = np.percentile(dt["B_DTF_PV_JpsiM_M"][good], [16, 50, 84])
    assert abs(qd[1] - 5279.3) < 5 and (qd[2] - qd[0]) < (q[2] - q[0])  # the J/psi constraint improves the resolution
    # truth matching: particle-gun events hold only the signal
    assert np.all(dt["B_BKGCAT"] == 0) and np.all(np.abs(dt["B_TRUEID"]) == 521)
    assert np.all(np.abs(dt["K_TRUEID"]) == 321) and np.all(np.abs(dt["muplus_TRUEID"]) == 13)
    # units: proper time in ns, B lifetime 1.638 ps
    tau = mc["B_TRUETAU"]
    assert abs(tau.mean() - 1.638e-3) < 5 * 1.638e-3 / np.sqrt(tau.size)
    # PID and occupancy columns are real: kaons mostly PIDK > 0, nTracks from the minimum-bias sampling
    assert (dt["K_PIDK"] > 0).mean() > 0.8 and dt["muplus_isMuon"].all()
    assert 15 < dt["nTracks"].mean() < 45


def test_flagship_provenance_and_counters(flagship):
    from framework.output import read_provenance

    out, app, summary, _ = flagship
    prov = read_provenance(str(out))
    names = {m["name"] for m in prov["models"]}
    assert {"trk2016_acceptance", "trk2016_efficiency", "trk2016_resolution", "trk2016_covariance"} <= names
    assert any(n.startswith("pid2016_") for n in names)
    assert prov["counters"]["Generation"]["generator-level cut"]["type"] == "binomial"


def test_flagship_identical_whatever_batch_size_and_sharding(flagship, tmp_path):
    """The reproducibility contract on the real chain (MLPs, flows, numba, vertex fits)."""
    out, *_ = flagship
    ref = arrays(out, "DecayTree")
    run(OPTIONS / "Bu2JpsiK_pgun.yaml", "ApplicationMgr.EvtMax=1500", "ApplicationMgr.BatchSize=7",
        f"ApplicationMgr.Output={tmp_path / 'b7.root'}")
    other = arrays(tmp_path / "b7.root", "DecayTree")
    assert sorted(ref) == sorted(other)
    for k in ref:
        np.testing.assert_array_equal(ref[k], other[k], err_msg=k)
    run(OPTIONS / "Bu2JpsiK_pgun.yaml", "ApplicationMgr.EvtMax=700", f"ApplicationMgr.Output={tmp_path / 's1.root'}")
    run(OPTIONS / "Bu2JpsiK_pgun.yaml", "ApplicationMgr.FirstEvent=700", "ApplicationMgr.EvtMax=800",
        f"ApplicationMgr.Output={tmp_path / 's2.root'}")
    s1, s2 = arrays(tmp_path / "s1.root", "DecayTree"), arrays(tmp_path / "s2.root", "DecayTree")
    for k in ("B_M", "B_DTF_PV_JpsiM_M", "K_PIDK", "eventNumber", "muplus_ProbNNmu", "B_IPCHI2_OWNPV"):
        np.testing.assert_array_equal(ref[k], np.concatenate([s1[k], s2[k]]), err_msg=k)


def test_validation_channel_lb2lcmunu(tmp_path):
    out = tmp_path / "lb.root"
    app, summary = run(OPTIONS / "Lb2Lcmunu_pgun.yaml", "ApplicationMgr.EvtMax=1500", f"ApplicationMgr.Output={out}")
    dt = arrays(out, "DecayTree")
    assert len(dt["Lb_M"]) > 50
    # partially reconstructed: visible mass below the Lambda_b mass (up to the momentum resolution at the
    # endpoint, where the neutrino is soft), corrected mass above the visible one
    assert np.mean(dt["Lb_M"] < 5619.6 + 50) > 0.98 and np.median(dt["Lb_M"]) < 5619.6 - 500
    assert np.median(dt["Lb_MCORR"]) > np.median(dt["Lb_M"])
    qc = np.percentile(dt["Lc_M"], [50])
    assert abs(qc[0] - 2286.5) < 10
    assert np.all(np.isin(dt["Lb_BKGCAT"], [0, 10, 20, 30, 40, 50]))


def test_hepmc_tracking_job(tmp_path):
    files = shared_path("data", "hepmc", "DSt_Pi")
    out = tmp_path / "tracks.root"
    app, summary = run(OPTIONS / "tracking" / "hepmc_lhcb_tracks.yaml", f"ApplicationMgr.Output={out}",
                       f"Generation.Input=['{files}/evt*.mc2']")
    assert summary["events_processed"] == 10, app.stream.getvalue()[-3000:]
    tr = arrays(out, "Tracks")
    n = len(tr["p"])
    assert 200 < n < 1500  # SQLamarr: ~50 reconstructed tracks per crossing
    assert set(np.unique(tr["type"]).tolist()) <= {3, 4, 5}
    assert np.all(np.isfinite(tr["x"])) and np.all(tr["p"] > 0)
    rel = (tr["p"] - np.sqrt(tr["true_px"] ** 2 + tr["true_py"] ** 2 + tr["true_pz"] ** 2)) / tr["p"]
    long = tr["type"] == 3
    assert np.median(np.abs(rel[long])) < 0.01


def test_flagship_identical_fresh_compilation_and_numba_cache(tmp_path):
    """A first run (every numba kernel compiled in the process) and a second run (kernels loaded
    from numba's on-disk cache) write identical ntuples: fast-math code generation once made the
    DecayTreeFitter outputs depend on the compilation state (~1e-11 relative)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba_cache"))
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}.root"
        subprocess.run([sys.executable, "-m", "framework.cli", "run", str(OPTIONS / "Bu2JpsiK_pgun.yaml"), "-n", "600",
                        "-o", str(out)], cwd=REPO, env=env, check=True, capture_output=True)
        outs.append(arrays(out, "DecayTree"))
    assert len(outs[0]["B_M"]) > 50
    assert sorted(outs[0]) == sorted(outs[1])
    for k in outs[0]:
        np.testing.assert_array_equal(outs[0][k], outs[1][k], err_msg=k)
