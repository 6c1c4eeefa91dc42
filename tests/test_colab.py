"""The Colab path: one repository address, generated install cells, imports the install gets,
run pages that say how to reproduce them, and an install that keeps the runtime's torch."""
from __future__ import annotations

import ast
import json
import os
import shutil
import site
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
import yaml

from vitcls_utils.running import colab, runner

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_repository_address_is_written_once():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"]["url"] == colab.repository()
    for notebook in NOTEBOOKS:  # no other address of the repository in a notebook
        text = notebook.read_text()
        assert text.count("github.com/") == text.count(colab.repository().split("//")[1])


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_install_cell_and_colab_link_are_the_generated_ones(notebook, tmp_path):
    copy = tmp_path / notebook.name
    shutil.copy(notebook, copy)
    assert not colab.sync_notebook(copy), "run python -m vitcls_utils.running.colab"
    cells = nbformat.read(notebook, as_version=4).cells
    assert cells[1].source == colab.install_cell()
    assert colab.colab_url(notebook.name) in cells[0].source


def notebook_imports(path: Path) -> set:
    found = set()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines()
                           if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_no_notebook_imports_a_package_its_install_cell_does_not_get():
    requires = [r for r in metadata.requires("vitcls-utils") if "extra ==" not in r]
    base = {r.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip()
            .lower().replace("_", "-") for r in requires}
    base |= {"ipython"}  # ipykernel's own requirement: every kernel has it
    distributions = metadata.packages_distributions()
    for notebook in NOTEBOOKS:
        for module in notebook_imports(notebook) - {"vitcls_utils", "google"}:
            if module in sys.stdlib_module_names:
                continue
            owners = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
            assert owners & base, f"{notebook.name} imports {module}, which only {owners} gives"


def test_the_package_pins_nothing_a_colab_runtime_already_has():
    requires = metadata.requires("vitcls-utils")
    for name in ("torch", "torchvision", "timm"):
        spec = next(r for r in requires if r.split(">")[0].split("<")[0].split("=")[0] == name)
        assert "==" not in spec, f"{spec}: an exact pin would replace Colab's own build"
    assert "constraints" not in colab.install_cell()


def test_a_run_page_says_how_to_reproduce_it_in_colab():
    notebook = ROOT / "notebooks" / "tab1_identifiability_rate.ipynb"
    line = colab.parameters_line(notebook, {"variant": "toy_gap", "dataset": "toy",
                                            "device": "cpu", "results_dir": "/x"})
    assert colab.colab_url(notebook.name) in line and "`variant = 'toy_gap'`" in line
    assert "dataset" not in line and "results_dir" not in line  # defaults and local paths
    default = colab.parameters_line(notebook, {"variant": "toy"})
    assert "default parameters" in default
    assert runner.notebook_parameters(notebook)[:2] == ["variant", "dataset"]


def test_installing_into_a_runtime_with_torch_keeps_it_and_a_notebook_runs(tmp_path):
    """A stand-in for Colab: a fresh venv that already has torch, torchvision, timm and the
    rest (the project venv's packages, on its path); the install cell's pip command against a
    copy of the repository installs the package alone, and a notebook then runs."""
    venv = tmp_path / "runtime"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    own = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                               "get_paths()['purelib'])"], capture_output=True, text=True,
                              check=True).stdout.strip())
    runtime = tmp_path / "preinstalled"  # the project venv's packages, less vitcls_utils itself
    runtime.mkdir()
    for folder in (Path(p) for p in site.getsitepackages() if "site-packages" in p):
        for entry in folder.iterdir():
            if "vitcls_utils" not in entry.name and not entry.name.startswith(
                    ("__editable__", "vitcls_utils")) and not (runtime / entry.name).exists():
                (runtime / entry.name).symlink_to(entry)
    (own / "runtime.pth").write_text(f"import site; site.addsitedir({str(runtime)!r})\n")
    versions = "import torch, torchvision, timm; print(torch.__version__, " \
               "torchvision.__version__, timm.__version__)"
    before = subprocess.run([str(python), "-c", versions], capture_output=True, text=True,
                            check=True, cwd=tmp_path).stdout
    source = tmp_path / "vitcls"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([str(python), "-m", "pip", "--version"], check=True, env=env,
                   capture_output=True)
    # the install cell's own command (no build isolation offline: setuptools is preinstalled)
    command = colab.install_command(str(source)) + ["--no-build-isolation"]
    done = subprocess.run([str(python), *command], env=env, capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    after = subprocess.run([str(python), "-c", versions], capture_output=True, text=True,
                           check=True).stdout
    assert after == before
    assert not any((own / name).exists() for name in ("torch", "torchvision", "timm"))
    located = subprocess.run([str(python), "-c", "import vitcls_utils; print(vitcls_utils."
                              "__file__)"], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert located.startswith(str(source))
    out = tmp_path / "ran.ipynb"
    ran = subprocess.run([str(python), "-m", "papermill", str(source / "notebooks" /
                          "tab1_identifiability_rate.ipynb"), str(out), "--cwd",
                          str(source / "notebooks"), "--no-progress-bar", "-p", "n_per_class", "1"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    cells = json.loads(out.read_text())["cells"]
    assert any("identifiability rate" in "".join(o.get("text", "")) for c in cells
               if c["cell_type"] == "code" for o in c["outputs"])
