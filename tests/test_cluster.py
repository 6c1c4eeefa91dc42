"""The matrix through submitit: SLURM jobs built with the run's resources (inspected, no
cluster needed), and the local executor running a small matrix in parallel processes whose
pages equal a serial run's, resuming with only what is missing."""
from __future__ import annotations

import argparse
import json
import re

import nbformat
import pytest

from vitcls_utils import cluster, runner
from vitcls_utils.errors import VitclsError
from vitcls_utils.runfile import VariantRun, parse, parse_devices

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


def test_flags_override_the_run_files_cluster_section(tmp_path, monkeypatch):
    config = tmp_path / "run.yml"
    config.write_text("cluster: {partition: a100, time_min: 60}\nvariants: {toy: {}}\n")
    seen = {}
    monkeypatch.setattr(cluster, "submit", lambda runs, pattern, **kw: seen.update(kw) or
                        cluster.Submission())
    args = argparse.Namespace(config=str(config), variants=None, data=None, data_dir=None,
                              weights=None, notebooks="tab1*", device=None, results_dir=None,
                              profile=None, devices="cpu,cpu", executor="slurm", no_wait=True,
                              partition=None, gpus_per_job=None, cpus_per_job=None, time_min=30,
                              mem_gb=None, force=False)
    assert cluster.main_submit(args, runs_dir=tmp_path / "runs") == 0
    assert seen["resources"] == {"partition": "a100", "time_min": 30}
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
    (tmp_path / "jobs" / "toy_gap" / "tab1_identifiability_rate.ipynb").unlink()  # a lost page
    resumed = cluster.submit(RUNS, "tab1*", executor="local", devices=["cpu"],
                             results_dir=tmp_path / "r2", runs_dir=tmp_path / "jobs",
                             profiles=["corrected"], log=lambda *a: None)
    assert list(resumed.jobs) == ["toy_gap"] and resumed.up_to_date == ["toy_random"]
    assert (tmp_path / "jobs" / "toy_gap" / "tab1_identifiability_rate.ipynb").exists()


def test_devices_spread_the_threaded_runner(tmp_path):
    matrix = runner.run(RUNS, "tab1*", device="auto", devices=["cpu", "cpu"],
                        results_dir=tmp_path / "r", runs_dir=tmp_path / "runs",
                        log=lambda *a: None)
    assert [j.status for j in matrix] == ["ran", "ran"]
    assert {j.parameters["device"] for j in matrix} == {"cpu"}
