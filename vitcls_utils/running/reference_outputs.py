"""The headline outputs stored in ``notebooks/``: what ``make test`` (nbval) compares each
notebook's fresh run with. ``make reference-outputs`` refreshes them after a deliberate change
of results (``python -m vitcls_utils.running.reference_outputs [PATTERN]``)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from . import jupyter_kernels as kernels
from .runner import NOTEBOOKS, source_notebooks


def store_reference_outputs(pattern: str = "*", results_dir: Optional[Path] = None) -> None:
    """Execute the source notebooks with their default parameters and keep, in the source,
    only the outputs of the cells tagged ``nbval-check-output``: the headline numbers that
    ``make test`` (nbval) compares against. Every other cell is stored without output. The
    run's seconds go into the notebook's metadata (``vitcls.seconds``): the runner starts the
    longest notebooks first, so that no worker is left with one at the end."""
    import tempfile
    import time

    import nbformat
    import papermill

    for notebook in source_notebooks(pattern):
        with tempfile.TemporaryDirectory() as tmp:
            executed_path = Path(tmp) / notebook.name
            params = {"results_dir": str(results_dir)} if results_dir else {}
            started = time.perf_counter()
            papermill.execute_notebook(str(notebook), str(executed_path), parameters=params,
                                       cwd=str(NOTEBOOKS), kernel_name="python3",
                                       progress_bar=False,
                                       engine_name=kernels.register_engine())
            seconds = time.perf_counter() - started
            executed = nbformat.read(executed_path, as_version=4)
            kernels.renumber(executed)
        source = nbformat.read(notebook, as_version=4)
        source.metadata.setdefault("vitcls", {})["seconds"] = round(seconds, 1)
        ran = [c for c in executed.cells if c.cell_type == "code"
               and "injected-parameters" not in c.metadata.get("tags", [])]
        count = 0
        for cell, done in zip([c for c in source.cells if c.cell_type == "code"], ran,
                              strict=True):
            if "nbval-check-output" in cell.metadata.get("tags", []):
                count += 1
                cell.outputs, cell.execution_count = done.outputs, count
            else:
                cell.outputs, cell.execution_count = [], None
        nbformat.write(source, notebook)
        print(f"stored reference outputs of {notebook.name}")


if __name__ == "__main__":
    try:
        store_reference_outputs(sys.argv[1] if len(sys.argv) > 1 else "*")
    finally:
        kernels.discard_thread_kernel()
