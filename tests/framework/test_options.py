import pytest
import yaml

from framework import ConfigurationError
from framework.options import load_options, parse_set

from .helpers import make_app, write_options


def test_include_and_later_wins(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "ApplicationMgr:\n  EvtMax: 10\n  Seed: 3\nAlgorithms:\n  - {type: ToyProducer, name: Gen, Mean: 5.0}\n  - {type: EventCounter, name: Count}\n")
    (tmp_path / "job.yaml").write_text(
        "include: [base.yaml]\nApplicationMgr:\n  Seed: 4\nAlgorithms:\n  - {name: Gen, Mean: 7.0}\n  - {type: NoOp, name: Extra}\n")
    opts = load_options([tmp_path / "job.yaml"])
    assert opts.app == {"EvtMax": 10, "Seed": 4}
    assert [a.name for a in opts.algorithms] == ["Gen", "Count", "Extra"]
    assert opts.algorithm("Gen").properties["Mean"] == 7.0
    assert opts.algorithm("Gen").sources["Mean"].line == 5


def test_several_files_on_command_line_merge_in_order(tmp_path):
    a = write_options(tmp_path, {"ApplicationMgr": {"EvtMax": 5}, "Algorithms": [{"type": "NoOp", "name": "N"}]}, "a.yaml")
    b = write_options(tmp_path, {"ApplicationMgr": {"EvtMax": 6}}, "b.yaml")
    assert load_options([a, b]).app["EvtMax"] == 6


def test_error_names_file_line_key_and_choices(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("ApplicationMgr:\n  EvtMax: 10\nAlgorithms:\n  - type: ToyProducer\n    name: Gen\n    Maen: 3.0\n")
    with pytest.raises(ConfigurationError) as exc:
        make_app(path)
    msg = str(exc.value)
    assert f"{path}:6" in msg and "Maen" in msg and "did you mean 'Mean'" in msg


def test_wrong_type_in_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("ApplicationMgr:\n  EvtMax: ten\n")
    with pytest.raises(ConfigurationError, match=r"bad.yaml:2: ApplicationMgr: ApplicationMgr.EvtMax: expected int, got str 'ten'"):
        make_app(path)


def test_unknown_type_and_top_key(tmp_path):
    path = write_options(tmp_path, {"Algorithms": [{"type": "ToyProduce", "name": "G"}]})
    with pytest.raises(ConfigurationError, match="did you mean 'ToyProducer'"):
        make_app(path)
    path = tmp_path / "top.yaml"
    path.write_text("ApplicationMgs:\n  EvtMax: 1\n")
    with pytest.raises(ConfigurationError, match=r"top.yaml:1: unknown top-level key 'ApplicationMgs' \(did you mean 'ApplicationMgr'\?\)"):
        load_options([path])


def test_invalid_yaml_and_missing_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("ApplicationMgr:\n  EvtMax: [1,\n")
    with pytest.raises(ConfigurationError, match="broken.yaml:.*invalid YAML"):
        load_options([path])
    with pytest.raises(ConfigurationError, match="not found"):
        load_options([tmp_path / "nope.yaml"])


def test_set_overrides_parsed_by_type(tmp_path):
    path = write_options(tmp_path, {"ApplicationMgr": {"EvtMax": 10}, "Algorithms": [{"type": "ToyProducer", "name": "Gen"}]})
    app = make_app(path, ["Gen.Mean=3", "ApplicationMgr.Output=out.root"])
    assert app.algorithms[0].Mean == 3.0 and app.Output == "out.root"
    with pytest.raises(ConfigurationError, match="no algorithm named 'Gne'.*did you mean 'Gen'"):
        make_app(path, ["Gne.Mean=3"])
    with pytest.raises(ConfigurationError, match="expected Name.Property=value"):
        parse_set("GenMean=3")


def test_dump_reruns_identically(tmp_path):
    path = write_options(tmp_path, {"ApplicationMgr": {"EvtMax": 10, "Seed": 9},
                                    "Algorithms": [{"type": "ToyProducer", "name": "Gen", "Mean": 4.0}]})
    app = make_app(path, ["Gen.Mean=6"])
    dumped = tmp_path / "dump.yaml"
    dumped.write_text(yaml.safe_dump(app.effective_configuration(), sort_keys=False))
    again = make_app(dumped)
    assert again.effective_configuration() == app.effective_configuration()
