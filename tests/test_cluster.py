"""The matrix through submitit: SLURM jobs built with the run's resources (inspected, no
cluster needed), and the local executor running a small matrix in parallel processes whose
pages equal a serial run's, resuming with only what is missing."""
from __future__ import annotations

import argparse
import json
import re

import nbformat
import pytest

from vitcls_utils.running import cluster, runner
from vitcls_utils.base.errors import VitclsError
from vitcls_utils.running.run_file import VariantRun, parse, parse_devices

RUNS = [VariantRun("toy_random", "toy", n_per_class=1), VariantRun("toy_gap", "toy", n_per_class=1)]


def outputs(page):
    """The code cells' outputs, with what differs between any two runs masked: object
    addresses in reprs and the random ids pandas gives a styled table."""
    text = json.dumps([c.outputs for c in nbformat.read(page, 4).cells if c.cell_type == "code"])
    return re.sub(r"T_[0-9a-f]{5}", "T_id", re.sub(r"0x[0-9a-f]+", "0x", text))


def test_slurm_jobs_carry_the_resources_and_bad_ones_are_named(tmp_path, monkeypatch):
    with pytest.raises(VitclsError, match="needs SLURM's sbatch and srun"):
        cluster.make_executor("slurm", tmp_path)
    bin_dir = tmp_path / "bin"  # a login node's commands, as far as submitit looks
    bin_dir.mkdir()
    for name in ("srun", "sbatch"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    executor = cluster.make_executor("slurm", tmp_path, {"partition": "gpu", "gpus_per_job": 2,
                                                         "time_min": 90, "mem_gb": 32,
                                                         "account": "lab"})
    params = executor.parameters
    assert (params["partition"], params["gpus_per_node"], params["time"], params["mem"],
            params["account"], params["cpus_per_task"]) == ("gpu", 2, 90, "32GB", "lab", 8)
    assert params["nodes"] == 1 and params["ntasks_per_node"] == 1
    with pytest.raises(VitclsError, match="unknown key 'gpus'.*time_min must be an integer"):
        cluster.make_executor("slurm", tmp_path, {"gpus": 1, "time_min": 0})
    with pytest.raises(VitclsError, match="--executor must be one of"):
        cluster.make_executor("pbs", tmp_path)
    assert parse_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    with pytest.raises(VitclsError, match="not a torch device"):
        parse_devices("gpu0,cpu")
    data = {"cluster": {"partition": "a100", "gpus": 1}, "variants": {"toy": {}}}
    with pytest.raises(VitclsError, match="cluster: unknown key 'gpus'"):
        parse(data, tmp_path)
    assert parse({"cluster": {"partition": "a100"}, "variants": {"toy": {}}},
                 tmp_path).cluster == {"partition": "a100"}


def fake_slurm(tmp_path, monkeypatch):
    """A login node's sbatch (that keeps each submission script and answers with a job id)
    and srun, on PATH; returns the folder the scripts go to."""
    bin_dir, scripts = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    scripts.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\nn=$(ls " + str(scripts) + " | wc -l)\nid=$((4200 + n))\n"
        "cp \"$1\" " + str(scripts) + "/$id.sh\necho \"Submitted batch job $id\"\n")
    for name in ("srun", "sbatch"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    return scripts


def test_slurm_shards_are_an_array_and_the_notebooks_wait_for_it(tmp_path, monkeypatch):
    scripts = fake_slurm(tmp_path, monkeypatch)
    runs = [VariantRun("toy_random", "toy", n_per_class=1)]
    done = cluster.submit(runs, "tab1*", executor="slurm", results_dir=tmp_path / "r",
                          runs_dir=tmp_path / "runs", profiles=["corrected"], wait=False,
                          shards=3, resources={"partition": "gpu"}, log=lambda *a: None)
    assert list(done.job_ids.values()) == ["4200_0", "4200_1", "4200_2", "4201"]
    array, notebooks = (scripts / "4200.sh").read_text(), (scripts / "4201.sh").read_text()
    assert "#SBATCH --array=0-2%3" in array and "#SBATCH --partition=gpu" in array
    assert "#SBATCH --dependency=afterok:4200" in notebooks and "--array" not in notebooks
    # a variant whose main store exists gets no array, and no dependency
    from vitcls_utils.stores.extraction import store_for

    store_for("toy_random", n_per_class=1, results_dir=tmp_path / "r", device="cpu",
              progress=False)
    again = cluster.submit(runs, "tab1*", executor="slurm", results_dir=tmp_path / "r",
                           runs_dir=tmp_path / "runs", profiles=["corrected"], wait=False,
                           shards=3, log=lambda *a: None)
    assert list(again.job_ids.values()) == ["4202"]
    assert "dependency" not in (scripts / "4202.sh").read_text()
    with pytest.raises(VitclsError, match="--shards with --no-wait needs SLURM"):
        cluster.submit(runs, "tab1*", executor="local", results_dir=tmp_path / "r",
                       runs_dir=tmp_path / "runs", profiles=["corrected"], wait=False,
                       shards=2)


def test_local_shards_fill_the_store_of_one_process_then_the_notebooks_read_it(tmp_path):
    from vitcls_utils.stores.extraction import store_for

    runs = [VariantRun("toy_random", "toy", n_per_class=2)]
    done = cluster.submit(runs, "tab1*", executor="local", devices=["cpu", "cpu"],
                          results_dir=tmp_path / "r", runs_dir=tmp_path / "runs",
                          profiles=["corrected"], shards=2, log=lambda *a: None)
    assert sorted(done.jobs) == ["toy_random", "toy_random:shard-0-of-2",
                                 "toy_random:shard-1-of-2"]
    sharded = store_for("toy_random", n_per_class=2, results_dir=tmp_path / "r")
    assert sharded.manifest["shards"] == 2
    one = store_for("toy_random", n_per_class=2, results_dir=tmp_path / "one", progress=False)
    for name in ("rank", "top1", "true_logit", "pred", "status"):
        assert (getattr(sharded, name) == getattr(one, name)).all() or name == "true_logit"
    assert sharded.manifest["checksums"] == one.manifest["checksums"]
    assert (tmp_path / "runs" / "toy_random" / "tab1_identifiability_rate.ipynb").exists()


def test_flags_override_the_run_files_cluster_section(tmp_path, monkeypatch):
    config = tmp_path / "run.yml"
    config.write_text("cluster: {partition: a100, time_min: 60, shards: 2}\n"
                      "variants: {toy: {}}\n")
    seen = {}
    monkeypatch.setattr(cluster, "submit", lambda runs, pattern, **kw: seen.update(kw) or
                        cluster.Submission())
    args = argparse.Namespace(config=str(config), variants=None, data=None, data_dir=None,
                              weights=None, notebooks="tab1*", device=None, results_dir=None,
                              profile=None, devices="cpu,cpu", executor="slurm", no_wait=True,
                              partition=None, gpus_per_job=None, cpus_per_job=None, time_min=30,
                              mem_gb=None, force=False)
    assert cluster.main_submit(args, runs_dir=tmp_path / "runs") == 0
    assert seen["resources"] == {"partition": "a100", "time_min": 30} and seen["shards"] == 2
    assert seen["devices"] == ["cpu", "cpu"] and seen["wait"] is False


def test_local_jobs_in_parallel_write_the_pages_of_a_serial_run_and_resume(tmp_path):
    serial = runner.run(RUNS, "tab1*", device="cpu", results_dir=tmp_path / "r1",
                        runs_dir=tmp_path / "serial", log=lambda *a: None)
    assert [j.status for j in serial] == ["ran", "ran"]
    done = cluster.submit(RUNS, "tab1*", executor="local", devices=["cpu", "cpu"],
                          results_dir=tmp_path / "r2", runs_dir=tmp_path / "jobs",
                          profiles=["corrected"], log=lambda *a: None)
    assert set(done.jobs) == {"toy_random", "toy_gap"} and not done.up_to_date
    for job in serial:
        page = tmp_path / "jobs" / job.output.relative_to(tmp_path / "serial")
        assert outputs(page) == outputs(job.output)
    again = cluster.submit(RUNS, "tab1*", executor="local", devices=["cpu"],
                           results_dir=tmp_path / "r2", runs_dir=tmp_path / "jobs",
                           profiles=["corrected"], log=lambda *a: None)
    assert not again.jobs and again.up_to_date == ["toy_random", "toy_gap"]
    # resuming after a kill: test_a_killed_local_run_resumes_and_submits_only_what_is_missing


def test_devices_spread_the_threaded_runner_and_no_thread_moves_the_process(tmp_path,
                                                                          monkeypatch):
    """Two worker threads; neither moves the process's working directory elsewhere
    (papermill's cwd argument did, and two threads restoring it in the wrong order left the
    process in notebooks/; papermill's file handler still changes to the same folder and back)."""
    import os

    start, moves = os.getcwd(), []
    real_chdir = os.chdir
    monkeypatch.setattr(os, "chdir", lambda path: moves.append(path) or real_chdir(path))
    matrix = runner.run(RUNS, "tab1*", device="auto", devices=["cpu", "cpu"],
                        results_dir=tmp_path / "r", runs_dir=tmp_path / "runs",
                        log=lambda *a: None)
    assert [j.status for j in matrix] == ["ran", "ran"]
    assert {j.parameters["device"] for j in matrix} == {"cpu"}
    assert {os.path.abspath(str(m)) for m in moves} <= {start} and os.getcwd() == start


def test_a_killed_local_run_resumes_and_submits_only_what_is_missing(tmp_path):
    """``--executor local`` killed (SIGKILL to its process group: the submitting process, the
    job controllers, the jobs) once its first page is written; the rerun submits only the
    variants with a page missing, and leaves the pages that were done untouched."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pattern = "[tf][ai][bg][12]_*"  # tab1_identifiability_rate and fig2_identifiability_evolution
    runs_dir, results = tmp_path / "runs", tmp_path / "results"
    script = (f"from vitcls_utils.running import cluster\n"
              f"from vitcls_utils.running.run_file import VariantRun\n"
              f"cluster.submit([VariantRun('toy_random', 'toy', n_per_class=1), "
              f"VariantRun('toy_gap', 'toy', n_per_class=1)], {pattern!r}, executor='local', "
              f"devices=['cpu', 'cpu'], results_dir={str(results)!r}, "
              f"runs_dir={str(runs_dir)!r}, profiles=['corrected'])\n")
    every = {f"{v}/{n}.ipynb" for v in ("toy_random", "toy_gap")
             for n in ("tab1_identifiability_rate", "fig2_identifiability_evolution")}

    def pages():
        return {p.relative_to(runs_dir).as_posix(): p.stat().st_mtime_ns
                for p in runs_dir.glob("*/*.ipynb") if not p.name.startswith(".")}

    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                               env={**os.environ, "TQDM_DISABLE": "1"})
    deadline = time.monotonic() + 240
    while not pages() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended (or failed) before it was killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = pages()
    assert before and set(before) < every, f"killed too late or too early: {sorted(before)}"
    time.sleep(1.5)  # orphaned kernels notice their parent is gone and exit
    assert pages() == before, "nothing runs on after the kill"
    missing = sorted({name.split("/")[0] for name in every - set(before)},
                     key=["toy_random", "toy_gap"].index)
    resumed = cluster.submit([VariantRun("toy_random", "toy", n_per_class=1),
                              VariantRun("toy_gap", "toy", n_per_class=1)], pattern,
                             executor="local", devices=["cpu", "cpu"], results_dir=results,
                             runs_dir=runs_dir, profiles=["corrected"], log=lambda *a: None)
    assert list(resumed.jobs) == missing
    after = pages()
    assert set(after) == every
    assert {k: after[k] for k in before} == before, "pages done before the kill were kept"
    for name in every:
        assert nbformat.read(runs_dir / name, 4).metadata["vitcls"]["status"] == "ok"


class FakeJob:
    """What submitit's Job offers the waiting code: an id, a result (or its error), cancel."""

    def __init__(self, job_id, result=None, error=None):
        self.job_id, self._result, self._error, self.cancelled = job_id, result, error, False

    def result(self):
        if self._error:
            raise RuntimeError(self._error)
        return self._result

    def cancel(self, check=True):
        self.cancelled = True


def test_a_failed_shard_cancels_its_variants_waiting_job_and_is_reported():
    page = [{"page": "runs/a/tab1.ipynb", "status": "ran", "message": ""}]
    jobs = {"a:shard-0-of-2": FakeJob("7_0", "store"),
            "a:shard-1-of-2": FakeJob("7_1", error="CUDA out of memory"),
            "b:shard-0-of-2": FakeJob("8_0", "store"), "b:shard-1-of-2": FakeJob("8_1", "store"),
            "a": FakeJob("9", error="never runs"), "b": FakeJob("10", page)}
    said = []
    failed = cluster._wait_variants(cluster.Submission(dict(jobs)), ["a", "b"], said.append)
    assert jobs["a"].cancelled and not jobs["b"].cancelled
    assert failed == ["job a:shard-1-of-2 (7_1): CUDA out of memory",
                      "job a: cancelled, as a shard of its store failed"]
    assert "job b (10): 1 ran, 0 skipped, 0 failed" in said


def test_sbatch_refusing_a_job_is_one_line(tmp_path, monkeypatch, capsys):
    """Issue 35, item 14: submitit's FailedJobError once came out as a traceback."""
    from vitcls_utils.running.cli import main

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: invalid partition "
                                    "specified: nope' >&2\nexit 1\n")
    for name in ("srun", "sbatch"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    code = main(["run", "--executor", "slurm", "--variants", "toy_random", "--notebooks",
                 "tab1*", "--results-dir", str(tmp_path / "r"), "--partition", "nope",
                 "--force"])
    err = capsys.readouterr().err
    assert code == 2 and "sbatch refused the job: " in err and "invalid partition" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_sigterm_stops_a_local_run_and_its_jobs(tmp_path):
    """Issue 35, item 17: `kill PID` of `vitcls run --executor local` once left its jobs
    running on to write their pages; it now stops them as Ctrl-C does."""
    import os
    import signal
    import subprocess
    import sys
    import time

    runs, results = tmp_path / "runs", tmp_path / "results"
    script = ("import sys; from pathlib import Path\n"
              "from vitcls_utils.running import cli, runner\n"
              "runner.RUNS = Path(sys.argv[1])  # the book's pages stay where they are\n"
              "sys.exit(cli.main(sys.argv[2:]))\n")
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(runs), "run", "--executor", "local", "--variants",
         "toy_random", "--notebooks", "tab1*", "--results-dir", str(results), "--devices",
         "cpu"], env={**os.environ, "TQDM_DISABLE": "1"}, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(results.glob(".submitit/*/*_log.out")) and time.monotonic() < deadline:
        time.sleep(0.1)
    job_dir = next(results.glob(".submitit/*/*_log.out")).parent
    time.sleep(1.0)  # the job is at work: its kernel starts, its store is being made
    killed_at = time.time()
    os.kill(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in err, err
    controller = int(job_dir.name)

    def running() -> list:
        import psutil

        found = []
        for candidate in psutil.process_iter(["pid", "environ"]):
            environ = candidate.info["environ"] or {}
            if environ.get("SUBMITIT_LOCAL_JOB_ID") == str(controller) or \
                    candidate.info["pid"] == controller:
                found.append(candidate.info["pid"])
        return found

    deadline = time.monotonic() + 20
    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not running(), "the job (or its controller) ran on after SIGTERM"
    # on a loaded machine the small page can be finished before the signal: only a page
    # written after it would mean the job ran on (a killed kernel's hidden .partial file is
    # not a page: the book and the runs index leave it out, the next run replaces it)
    late = [page for page in runs.glob("*/[!.]*.ipynb") if page.stat().st_mtime > killed_at]
    assert not late, late
