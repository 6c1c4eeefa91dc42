"""The flat package's import paths after the move into layers: the same module object with a
FutureWarning, names of split modules forwarded, renamed functions reachable, imports still
lazy, and a store written by the flat package found and read unchanged."""
from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from vitcls_utils import _moved

FIXTURE = Path(__file__).parent / "fixtures" / "store_before_layout"


def forget(name: str) -> None:
    """Drop an old alias from sys.modules and from the package, as before its first import."""
    sys.modules.pop(name, None)
    package, _, attr = name.rpartition(".")
    if hasattr(sys.modules[package], attr) and attr in vars(sys.modules[package]):
        delattr(sys.modules[package], attr)


def fresh_import(name: str):
    """Import ``name`` as a first import would."""
    forget(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(name)
    return module, [w for w in caught if issubclass(w.category, FutureWarning)]


@pytest.mark.parametrize("old, new", sorted(_moved.MOVED.items()))
def test_every_old_path_is_the_new_module_with_a_warning(old, new):
    module, caught = fresh_import(f"vitcls_utils.{old}")
    assert module is importlib.import_module(f"vitcls_utils.{new}")
    assert len(caught) == 1 and f"vitcls_utils.{new}" in str(caught[0].message)
    assert caught[0].filename == __file__  # attributed to the importing line


def test_from_imports_of_old_names_work():
    forget("vitcls_utils.book")
    forget("vitcls_utils.extract")
    with pytest.warns(FutureWarning, match="report.notebook"):
        from vitcls_utils import book
    assert book.setup is importlib.import_module("vitcls_utils.report.notebook").setup
    with pytest.warns(FutureWarning):
        from vitcls_utils.extract import store_for
    from vitcls_utils.stores.extraction import store_for as moved

    assert store_for is moved


@pytest.mark.parametrize("old, name, new", [
    ("paper", "paper_value", "report.reported"),
    ("paper", "compare_table", "report.vilas_tables"),
    ("paper", "styled", "report.page"),
    ("plots", "evolution_figure", "report.vilas_figures"),
    ("plots", "set_theme", "report.style"),
    ("plots", "show", "report.page"),
    ("book", "glue", "report.page"),
    ("book", "setup", "report.notebook"),
    ("memories", "value_vector_table", "report.vilas_tables"),
    ("memories", "class_value_agreement", "analysis.memories"),
    ("context_metrics", "attention_table", "report.vilas_tables"),
    ("variants", "load_variant", "model.loading"),
    ("variants", "get_variant", "model.registry"),
    ("ghiasi", "table1", "report.ghiasi_tables"),
    ("ghiasi", "last_block_table", "report.ghiasi_bridges"),
])
def test_split_modules_forward_each_name_to_where_it_lives(old, name, new):
    module, caught = fresh_import(f"vitcls_utils.{old}")
    assert caught and getattr(module, name) is getattr(importlib.import_module(
        f"vitcls_utils.{new}"), name)
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018
    assert name in dir(module)


def test_renamed_functions_answer_to_their_old_names():
    from vitcls_utils.analysis import convit, stimulus_edits

    for module, old, new in ((convit, "evaluate", "evaluate_masks"),
                             (convit, "attention_maps", "query_attention_maps"),
                             (stimulus_edits, "evaluate", "evaluate_edits")):
        with pytest.warns(FutureWarning, match=new):
            assert getattr(module, old) is getattr(module, new)
    with pytest.raises(AttributeError):
        convit.no_such_function  # noqa: B018


def test_the_finder_answers_only_old_flat_names():
    finder = _moved._OldPathFinder()
    assert finder.find_spec("vitcls_utils.stores") is None
    assert finder.find_spec("vitcls_utils.extract.x") is None
    assert finder.find_spec("other.extract") is None
    assert finder.find_spec("vitcls_utils.extract") is not None
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("vitcls_utils.no_such_module")


def test_importing_the_package_and_an_old_cli_path_stays_cheap():
    code = ("import sys, warnings; warnings.simplefilter('ignore')\n"
            "import vitcls_utils, vitcls_utils.cli, vitcls_utils.running.cli\n"
            "print(sorted(m for m in ('torch', 'timm', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_store_written_by_the_flat_package_is_found_and_read(tmp_path, monkeypatch):
    """The fixture was written by `vitcls extract --variant toy --data toy --n-per-class 1
    --kinds resid_post` before the move: its configuration hash is what the layered package
    computes for the same request, so store_for finds it without loading the model."""
    from vitcls_utils.model import loading
    from vitcls_utils.stores import extraction
    from vitcls_utils.stores.reader import open_store

    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    monkeypatch.setattr(loading, "load_variant", lambda *a, **k: pytest.fail("extracted again"))
    store = extraction.store_for("toy", n_per_class=1, kinds=("resid_post",),
                                 results_dir=results, progress=False)
    assert store.path == results / "toy" / "toy-ddcf1b0db355"
    assert store.manifest["config_hash"].startswith("ddcf1b0db355")
    reread = open_store(store.path)  # checksums verified
    assert reread.rank.shape == (24, 12, 50)
    assert np.array_equal(reread.rank, np.load(FIXTURE / "toy" / "toy-ddcf1b0db355" / "rank.npy"))
