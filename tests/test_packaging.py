"""The pins, the conda mirror, the README's commands and CI's entry agree with each other."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines) -> dict:
    found = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[canonical(name)] = version.strip()
    return found


def test_environment_yml_mirrors_constraints():
    constraints = pins((ROOT / "constraints.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    mirrored = pins(pip_section)
    assert mirrored, "environment.yml pins nothing"
    for name, version in mirrored.items():
        assert constraints.get(name) == version, f"{name}: env {version} vs constraints {constraints.get(name)}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    for requirement in direct:
        name = canonical(re.split(r"[<>=!\[ ;]", requirement)[0])
        assert name in constraints, f"{name} is not pinned in constraints.txt"
        assert name in mirrored, f"{name} is not in environment.yml"


def test_installed_versions_are_the_pinned_ones():
    constraints = pins((ROOT / "constraints.txt").read_text().splitlines())
    from importlib.metadata import version

    for name in ["torch", "timm", "numpy", "jupyter-book", "papermill", "nbval"]:
        assert version(name).split("+")[0] == constraints[name], name


def test_readme_and_ci_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    for path in ["_config.yml", "_toc.yml", "environment.yml", "book", "notebooks",
                 "vitcls_utils", "data"]:
        assert (ROOT / path).exists(), path


def test_timm_imports_in_a_fresh_interpreter():
    """Kernels started from the venv (papermill, nbval) import timm without vitcls_utils."""
    result = subprocess.run([sys.executable, "-c", "import timm, torchvision; print('ok')"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_papermill_kernel_imports_timm(tmp_path):
    """A notebook executed by papermill from this venv imports timm and torchvision."""
    import nbformat
    import papermill

    notebook = nbformat.v4.new_notebook(metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    notebook.cells = [
        nbformat.v4.new_code_cell("n = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import timm, torchvision\nprint(timm.__version__, n)"),
    ]
    source, executed = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(notebook, source)
    papermill.execute_notebook(str(source), str(executed), parameters={"n": 2},
                               kernel_name="python3", progress_bar=False)
    outputs = nbformat.read(executed, as_version=4).cells[-1].outputs
    import timm

    assert outputs[0]["text"].strip() == f"{timm.__version__} 2"


def test_no_export_is_shadowed_by_a_submodule():
    """A submodule import rebinds the package attribute of the same name, so an export named
    like a submodule would silently turn into that module."""
    import pkgutil

    import vitcls_utils

    submodules = {m.name for m in pkgutil.iter_modules(vitcls_utils.__path__)}
    assert not set(vitcls_utils._EXPORTS) & submodules
