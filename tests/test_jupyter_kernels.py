"""Warm kernels: reused between notebooks, yet each notebook starts as in a fresh kernel."""
from __future__ import annotations

import json

import nbformat

from vitcls_utils.running import jupyter_kernels as kernels, runner


def notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# a test page")]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nb, path)
    return path


def outputs(path):
    cells = json.loads(path.read_text())["cells"]
    return [("".join(o.get("text", "")), c["execution_count"]) for c in cells
            if c["cell_type"] == "code" for o in c["outputs"]]


WARN = "import warnings\nwarnings.warn('shown in every notebook')"
PROBE = "import os\nprint(os.getpid(), 'x' in dir(), os.getcwd())"


def test_a_warm_kernel_is_reused_and_reset_between_notebooks(tmp_path):
    first = notebook(tmp_path / "a.ipynb", WARN, "x = 1", PROBE)
    second = notebook(tmp_path / "b.ipynb", WARN, PROBE)
    jobs = [runner.Job(nb, tmp_path / "runs" / nb.name, {}, "toy") for nb in (first, second)]
    try:
        for job in jobs:
            assert runner.execute(job, keep_kernel=True).status == "ran", job.message
    finally:
        kernels.discard_thread_kernel()
    (warn_a, _), (probe_a, count_a) = outputs(jobs[0].output)
    (warn_b, _), (probe_b, count_b) = outputs(jobs[1].output)
    pid_a, x_a, cwd_a = probe_a.split()
    pid_b, x_b, cwd_b = probe_b.split()
    assert pid_a == pid_b  # one kernel for both
    assert cwd_a == cwd_b == str(runner.NOTEBOOKS)  # where the notebooks' relative paths start
    assert (x_a, x_b) == ("True", "False")  # the namespace was reset
    assert "shown in every notebook" in warn_a and "shown in every notebook" in warn_b
    assert (count_a, count_b) == (3, 2)  # numbered as in a fresh kernel


def test_a_failed_notebook_gets_a_fresh_kernel_after_it(tmp_path):
    pid = "import os\nprint(os.getpid())"
    broken = notebook(tmp_path / "broken.ipynb", pid, "raise ValueError('broken')")
    good = notebook(tmp_path / "good.ipynb", pid)
    first = runner.Job(broken, tmp_path / "runs" / "broken.ipynb", {}, "toy")
    second = runner.Job(good, tmp_path / "runs" / "good.ipynb", {}, "toy")
    try:
        assert runner.execute(first, keep_kernel=True).status == "failed"
        assert runner.execute(second, keep_kernel=True).status == "ran"
    finally:
        kernels.discard_thread_kernel()
    pid_failed = outputs(tmp_path / "runs" / "broken.failed.ipynb")[0][0].strip()
    assert pid_failed.isdigit()
    assert outputs(second.output)[0][0].strip() != pid_failed


def test_discarding_the_kernel_ends_its_process(tmp_path):
    job = runner.Job(notebook(tmp_path / "a.ipynb", "print(1)"), tmp_path / "out.ipynb", {},
                     "toy")
    runner.execute(job, keep_kernel=True)
    manager = kernels.thread_kernel()
    process = manager.provisioner.process
    kernels.discard_thread_kernel()
    assert process.poll() is not None


def test_the_reset_frees_a_notebooks_cycles_before_freezing_what_survives(tmp_path):
    # the reset freezes what survives it (modules) out of the cyclic collector, so that later
    # collections skip it; a notebook's own objects, cycles included, must not survive
    cycle = ("import sys, weakref\nclass Node: pass\nnode = Node(); node.me = node\n"
             "sys._vitcls_probe = weakref.ref(node)")
    check = "import gc, sys\nprint(sys._vitcls_probe() is None, gc.get_freeze_count() > 0)"
    jobs = [runner.Job(notebook(tmp_path / f"{name}.ipynb", source), tmp_path / "runs" /
                       f"{name}.ipynb", {}, "toy") for name, source in (("a", cycle), ("b", check))]
    try:
        for job in jobs:
            assert runner.execute(job, keep_kernel=True).status == "ran", job.message
    finally:
        kernels.discard_thread_kernel()
    assert outputs(jobs[1].output)[0][0].split() == ["True", "True"]
