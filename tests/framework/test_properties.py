import pytest

from framework import Algorithm, ConfigurationError, Input, Output, Property


class Thing(Algorithm):
    """A test component."""

    Width = Property(float, 1.5, "width [mm]")
    Count = Property(int, 3, "how many")
    Names = Property(list, ["a"], "names", item_type=str)
    Mode = Property(str, "fast", "mode", choices=["fast", "slow"])
    Maybe = Property(float, None, "None means: from the conditions")
    Particles = Input("/Event/MC/Particles", "particles")
    Out = Output("/Event/Rec/Thing", "things")


def test_defaults_and_builtins():
    t = Thing("T")
    assert t.Width == 1.5 and t.Count == 3 and t.Names == ["a"] and t.Maybe is None
    assert t.OutputLevel == "INFO" and t.Enable is True and t.ErrorMax == 1
    assert set(Thing.handles("input")) == {"Particles"} and set(Thing.handles("output")) == {"Out"}


def test_int_accepted_for_float_but_not_bool():
    t = Thing("T", Width=2)
    assert t.Width == 2.0 and isinstance(t.Width, float)
    with pytest.raises(ConfigurationError, match=r"T\.Width: expected float, got bool"):
        t.Width = True


def test_wrong_type_names_component_property_and_type():
    with pytest.raises(ConfigurationError) as exc:
        Thing("Gen", Count="three")
    assert "Gen.Count: expected int, got str 'three'" in str(exc.value)


def test_unknown_property_did_you_mean():
    with pytest.raises(ConfigurationError) as exc:
        Thing("Gen", Widht=3.0)
    msg = str(exc.value)
    assert "unknown property 'Widht' of Gen (Thing)" in msg and "did you mean 'Width'" in msg


def test_choices_and_list_items():
    with pytest.raises(ConfigurationError, match="not one of"):
        Thing("T", Mode="fats")
    with pytest.raises(ConfigurationError, match="list items must be str"):
        Thing("T", Names=["a", 3])


def test_parse_from_string_by_type_never_eval():
    t = Thing("T")
    t.set_property_from_string("Width", "2.5")
    t.set_property_from_string("Names", "[x, y]")
    t.set_property_from_string("Mode", "slow")
    assert t.Width == 2.5 and t.Names == ["x", "y"] and t.Mode == "slow"
    with pytest.raises(ConfigurationError):
        t.set_property_from_string("Count", "__import__('os').getcwd()")


def test_handles_are_properties_and_rewirable():
    t = Thing("T", Particles="/Event/Other/Particles")
    assert t.Particles == "/Event/Other/Particles"
    with pytest.raises(ConfigurationError, match="starting with /Event/"):
        t.Particles = "MC/Particles"


def test_list_defaults_are_not_shared():
    a, b = Thing("A"), Thing("B")
    a.Names.append("z")
    assert b.Names == ["a"]
