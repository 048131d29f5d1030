"""Every hookspec is documented (docstring with an example) and has a README section."""
import inspect

from framework import hookspecs

from ..conftest import REPO


def hook_names():
    return [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("flashsim_")]


def test_every_hookspec_has_docstring_with_example():
    assert len(hook_names()) >= 8
    for name in hook_names():
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 40 and "Example" in doc and "@hookimpl" in doc, name


def test_every_hookspec_has_a_readme_section_with_signature():
    readme = (REPO / "README.md").read_text()
    for name in hook_names():
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"#### `{name}({params})`" in readme, name


def test_readme_starts_with_the_two_setup_commands():
    readme = (REPO / "README.md").read_text()
    blocks = [b for b in readme.split("```")[1::2]]
    assert "flashsim run options/Bu2JpsiK_pgun.yaml" in blocks[0] and "pip install" in blocks[0]
    test_cmd = blocks[1].replace("bash\n", "").strip()
    assert "pytest" in test_cmd
    assert test_cmd in (REPO / ".ci" / "run").read_text()


def test_framework_imports_nothing_from_algorithms():
    for path in (REPO / "framework").rglob("*.py"):
        text = path.read_text()
        assert "from algorithms" not in text and "import algorithms" not in text, path
