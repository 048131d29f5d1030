import os

import numpy as np
import pytest

from framework import ConfigurationError, EventError

from .helpers import assert_same_columns, make_app, read_tree, write_options
from .toy_plugin import write_toy_mlp


def chain(tmp_path, extra=(), evtmax=300, output="out.root"):
    model = write_toy_mlp(tmp_path)
    algs = [{"type": "ToyProducer", "name": "Gen", "Mean": 15.0}, *extra,
            {"type": "ToyMLP", "name": "MLP", "ModelFile": str(model)},
            {"type": "ToyTuple", "name": "Tuple"}]
    return write_options(tmp_path, {"ApplicationMgr": {"EvtMax": evtmax, "Seed": 11, "Output": str(tmp_path / output)},
                                    "Algorithms": algs})


def run(path, *overrides):
    app = make_app(path, overrides)
    summary = app.run()
    return app, summary


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_identical_output_whatever_the_batch_size(tmp_path, batch):
    opts = chain(tmp_path)
    run(opts, "ApplicationMgr.BatchSize=100", f"ApplicationMgr.Output={tmp_path / 'ref.root'}")
    run(opts, f"ApplicationMgr.BatchSize={batch}", f"ApplicationMgr.Output={tmp_path / 'b.root'}")
    ref, other = read_tree(tmp_path / "ref.root", "Toy"), read_tree(tmp_path / "b.root", "Toy")
    assert len(ref["px"]) > 3000
    assert_same_columns(ref, other)


def test_identical_output_whatever_the_sharding(tmp_path):
    opts = chain(tmp_path)
    run(opts, f"ApplicationMgr.Output={tmp_path / 'all.root'}")
    run(opts, "ApplicationMgr.EvtMax=130", f"ApplicationMgr.Output={tmp_path / 's1.root'}")
    run(opts, "ApplicationMgr.FirstEvent=130", "ApplicationMgr.EvtMax=170", f"ApplicationMgr.Output={tmp_path / 's2.root'}")
    full = read_tree(tmp_path / "all.root", "Toy")
    s1, s2 = read_tree(tmp_path / "s1.root", "Toy"), read_tree(tmp_path / "s2.root", "Toy")
    assert_same_columns(full, {k: np.concatenate([s1[k], s2[k]]) for k in full})


def test_multiprocess_job_matches_single_process(tmp_path):
    from framework.parallel import run_parallel

    from .helpers import plugins
    from framework.appmgr import ApplicationMgr
    from framework.options import load_options

    opts = chain(tmp_path)
    run(opts, f"ApplicationMgr.Output={tmp_path / 'single.root'}")
    over = ["ApplicationMgr.Processes=2", f"ApplicationMgr.Output={tmp_path / 'multi.root'}"]
    app = ApplicationMgr(load_options([opts]), over, plugins())
    summary = run_parallel(app, [str(opts)], over, ["tests.framework.toy_plugin"])
    assert len(summary["shards"]) == 2
    assert_same_columns(read_tree(tmp_path / "single.root", "Toy"), read_tree(tmp_path / "multi.root", "Toy"))


def test_seed_changes_output(tmp_path):
    opts = chain(tmp_path)
    run(opts, f"ApplicationMgr.Output={tmp_path / 'a.root'}")
    run(opts, "ApplicationMgr.Seed=12", f"ApplicationMgr.Output={tmp_path / 'b.root'}")
    a, b = read_tree(tmp_path / "a.root", "Toy"), read_tree(tmp_path / "b.root", "Toy")
    assert len(a["px"]) != len(b["px"]) or not np.array_equal(a["px"], b["px"])


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_error_max_skips_failing_events_same_at_every_batch_size(tmp_path, batch):
    opts = chain(tmp_path, extra=[{"type": "FailOn", "name": "Fail", "Modulo": 37, "Remainder": 5, "ErrorMax": 20}])
    app, summary = run(opts, f"ApplicationMgr.BatchSize={batch}")
    expected_bad = [e for e in range(300) if e % 37 == 5]
    assert summary["events_failed"] == len(expected_bad)
    assert summary["events_processed"] == 300 - len(expected_bad)
    rows = read_tree(tmp_path / "out.root", "Toy")
    assert not set(np.unique(rows["eventNumber"]).tolist()) & set(expected_bad)
    assert "in event 5 (run 1)" in app.log.getvalue()
    # failed attempts leave no trace in the counters: exactly the good events are counted
    assert summary["counters"]["Fail"]["events seen"]["entries"] == 300 - len(expected_bad)
    # the surviving events are identical to a job without the failing algorithm
    clean = chain(tmp_path, output="clean.root")
    run(clean)
    ref = read_tree(tmp_path / "clean.root", "Toy")
    keep = ~np.isin(ref["eventNumber"], expected_bad)
    assert_same_columns({k: v[keep] for k, v in ref.items()}, rows)


def test_job_fails_past_error_max_and_leaves_no_output(tmp_path):
    opts = chain(tmp_path, extra=[{"type": "FailOn", "name": "Fail", "Modulo": 10, "Remainder": 0, "ErrorMax": 3}])
    app = make_app(opts)
    with pytest.raises(EventError, match="Fail: 4 failed events exceed ErrorMax=3"):
        app.run()
    assert not (tmp_path / "out.root").exists()
    assert not [p for p in os.listdir(tmp_path) if ".part" in p]


def test_filter_compacts_batch(tmp_path):
    opts = chain(tmp_path, extra=[{"type": "HighMultiplicity", "name": "Busy", "Threshold": 15}])
    app, summary = run(opts, "ApplicationMgr.BatchSize=64")
    rows = read_tree(tmp_path / "out.root", "Toy")
    counts = np.bincount(rows["eventNumber"].astype(int), minlength=300)
    passed = counts > 15
    assert summary["events_processed"] == passed.sum() == app.algorithms[1].counters["passed"].passed
    assert np.all(counts[~passed] == 0)  # downstream algorithms saw only passing events


def test_dataflow_errors(tmp_path):
    path = write_options(tmp_path, {"ApplicationMgr": {"EvtMax": 1}, "Algorithms": [
        {"type": "ToyProducer", "name": "Gen"}, {"type": "NeedsMissing", "name": "Reader"}]})
    with pytest.raises(ConfigurationError, match=r"Reader.Tracks reads /Event/Rec/Trakcs, which no earlier algorithm produces"):
        make_app(path).initialize()
    path = write_options(tmp_path, {"ApplicationMgr": {"EvtMax": 1}, "Algorithms": [
        {"type": "ToyTuple", "name": "Tuple"}, {"type": "ToyProducer", "name": "Gen"},
        {"type": "ToyMLP", "name": "MLP", "ModelFile": "x.onnx"}]}, "order.yaml")
    with pytest.raises(ConfigurationError, match="produced later by MLP"):
        make_app(path).initialize()
    # rewiring through the location property fixes it
    path = write_options(tmp_path, {"ApplicationMgr": {"EvtMax": 1}, "Algorithms": [
        {"type": "ToyProducer", "name": "Gen", "Particles": "/Event/Rec/Trakcs"}, {"type": "NeedsMissing", "name": "Reader"}]}, "ok.yaml")
    make_app(path).check_dataflow()
    text = make_app(path).dataflow_text()
    assert "OUTPUT /Event/Rec/Trakcs" in text and "No unmet INPUT data dependencies were found" in text
    assert '"Gen" -> "/Event/Rec/Trakcs"' in make_app(path).dataflow_dot()


def test_model_errors_at_initialize(tmp_path):
    path = chain(tmp_path)
    with pytest.raises(ConfigurationError, match="model file 'missing.onnx' not found"):
        make_app(path, ["MLP.ModelFile=missing.onnx"]).initialize()
    model = write_toy_mlp(tmp_path, name="other", noise_dim=2)
    card = model.with_suffix(".yaml")
    card.write_text(card.read_text().replace("dim: 2", "dim: 3"))
    with pytest.raises(ConfigurationError, match=r"does not match its card.*expected signature x: float32\[N, 3\], noise: float32\[N, 3\]"):
        make_app(path, [f"MLP.ModelFile={model}"]).initialize()
    run3 = write_toy_mlp(tmp_path, name="run3", conditions="Run3-MagDown-13.6TeV")
    with pytest.raises(ConfigurationError, match="trained for conditions 'Run3-MagDown-13.6TeV'"):
        make_app(path, [f"MLP.ModelFile={run3}"]).initialize()
    make_app(path, [f"MLP.ModelFile={run3}", "ApplicationMgr.AllowConditionsMismatch=true"]).initialize()


def test_counters_summary_and_provenance(tmp_path):
    from framework.output import read_provenance

    opts = chain(tmp_path)
    app, summary = run(opts)
    log = app.log.getvalue()
    assert "Number of counters : 1" in log and '"multiplicity"' in log and "µs/event" in log
    mult = summary["counters"]["Gen"]["multiplicity"]
    assert mult["entries"] == 300 and abs(mult["mean"] - 15.0) < 4 * np.sqrt(15.0 / 300)
    prov = read_provenance(str(tmp_path / "out.root"))
    assert prov["seed"] == 11 and prov["events_requested"] == 300
    assert prov["effective_options"]["Algorithms"][0]["Mean"] == 15.0
    assert prov["models"][0]["name"] == "toy_mlp" and len(prov["models"][0]["sha256"]) == 64
    assert prov["counters"]["Gen"]["multiplicity"]["entries"] == 300


def test_output_compression_and_ttree(tmp_path):
    import uproot

    opts = chain(tmp_path)
    run(opts, "ApplicationMgr.Compression=LZ4:1")
    with uproot.open(tmp_path / "out.root") as f:
        assert f.classnames()["Toy;1"] == "TTree"
        assert isinstance(f.file.compression, uproot.LZ4)
    with pytest.raises(ConfigurationError, match="unknown algorithm"):
        make_app(opts, ["ApplicationMgr.Compression=GZIP:1"]).initialize()


def test_cuda_provider_requested_without_gpu(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is available here")
    opts = chain(tmp_path)
    with pytest.raises(ConfigurationError, match="'cuda' requested but onnxruntime offers only"):
        make_app(opts, ["ApplicationMgr.OnnxProvider=cuda"]).initialize()
    make_app(opts, ["ApplicationMgr.OnnxProvider=auto"]).initialize()  # falls back to the CPU


def test_ntuple_without_output_file_is_an_error(tmp_path):
    opts = chain(tmp_path)
    with pytest.raises(ConfigurationError, match="no output file is configured"):
        make_app(opts, ["ApplicationMgr.Output="]).initialize()


def test_bad_initialize_is_reported(tmp_path):
    path = write_options(tmp_path, {"ApplicationMgr": {"EvtMax": 1}, "Algorithms": [{"type": "BadInit", "name": "B"}]})
    with pytest.raises(ConfigurationError, match=r"B \(BadInit\) initialize: BadInit: refusing to start"):
        make_app(path).initialize()


def test_input_lists_and_optional_inputs(tmp_path):
    path = write_options(tmp_path, {"ApplicationMgr": {"EvtMax": 40, "BatchSize": 16}, "Algorithms": [
        {"type": "ToyProducer", "name": "Gen"},
        {"type": "ToyProducer", "name": "Gen2", "Particles": "/Event/MC/Other", "Mean": 3.0},
        {"type": "CountAll", "name": "Count", "Sources": ["/Event/MC/Particles", "/Event/MC/Other"]}]})
    app, summary = run(path)
    gen = summary["counters"]["Gen"]["multiplicity"]["sum"] + summary["counters"]["Gen2"]["multiplicity"]["sum"]
    assert summary["counters"]["Count"]["rows"]["entries"] == gen
    assert summary["counters"]["Count"]["extra present"]["entries"] == 0
    assert "Sources[1]" in app.dataflow_text()
    bad = write_options(tmp_path, {"ApplicationMgr": {"EvtMax": 1}, "Algorithms": [
        {"type": "ToyProducer", "name": "Gen"}, {"type": "CountAll", "name": "Count", "Sources": ["/Event/MC/Missing"]}]}, "bad.yaml")
    with pytest.raises(ConfigurationError, match=r"Count.Sources\[0\] reads /Event/MC/Missing"):
        make_app(bad).initialize()


def test_ntuple_handle_created_in_execute_is_written(tmp_path):
    path = write_options(tmp_path, {"ApplicationMgr": {"EvtMax": 25, "BatchSize": 10, "Output": str(tmp_path / "l.root")},
                                    "Algorithms": [{"type": "ToyProducer", "name": "Gen"}, {"type": "LazyTuple", "name": "L"}]})
    run(path)
    assert len(read_tree(tmp_path / "l.root", "Lazy")["n"]) == 25
