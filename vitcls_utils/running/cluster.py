"""The notebook matrix submitted through submitit: one job per variant (its notebooks, every
profile), then the comparisons, on SLURM (``--executor slurm``) or on this machine
(``--executor local``, submitit's local executor, which the tests run). submitit schedules;
this module only says what each job is and which jobs are still missing.

A rerun submits only the variants with a notebook that is not up to date (the runner's own
test: source, parameters and package version), so a killed or partly failed run resumes.

With ``shards`` > 1, a variant whose main store (the one every chapter reads) is not complete
first gets an array of that many extraction jobs (:mod:`vitcls_utils.stores.shards`: one store,
its rows dealt out), and its notebook job starts when the array has ended: on SLURM through the
job's ``afterok`` dependency, on this machine after waiting for the array.

A submission that sbatch refuses (a partition that does not exist, say) is one line with
sbatch's reason. Interrupted while it waits (Ctrl-C, or SIGTERM, which ``vitcls run`` turns
into the same), it cancels the local jobs it started, which stop their notebooks' kernels, so
that no page is written after it; SLURM jobs run on, and a rerun submits only what is missing.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set

from ..base.errors import VitclsError

EXECUTORS = ("local", "slurm")
DEFAULTS = {"gpus_per_job": 1, "cpus_per_job": 8, "time_min": 240, "mem_gb": 64}


@dataclass
class Submission:
    """What one call submitted: the submitit jobs by name, and the variants left out because
    every page of theirs was up to date."""

    jobs: Dict[str, object] = field(default_factory=dict)
    up_to_date: List[str] = field(default_factory=list)
    folder: Optional[Path] = None

    @property
    def job_ids(self) -> Dict[str, str]:
        return {name: str(job.job_id) for name, job in self.jobs.items()}


def make_executor(kind: str, folder: Path, resources: Optional[Mapping[str, object]] = None):
    """A submitit executor with the run's resources: SLURM's (partition, GPUs, CPUs, time,
    memory, account, QoS) or the local one (time and GPUs only)."""
    import submitit

    from .run_file import resource_problems

    problems = resource_problems(resources or {})
    if kind not in EXECUTORS:
        problems.append(f"--executor must be one of {EXECUTORS}, not {kind!r}")
    if problems:
        raise VitclsError("; ".join(problems))
    wanted = {**DEFAULTS, **(resources or {})}
    folder = Path(folder) / "%j"
    if kind == "local":  # jobs are processes of this machine, on the devices they are given
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=wanted["time_min"])
        return executor
    import shutil

    if shutil.which("srun") is None or shutil.which("sbatch") is None:
        raise VitclsError("--executor slurm needs SLURM's sbatch and srun on PATH, and this "
                          "machine has neither: run it on the cluster's login node, or use "
                          "--executor local")
    executor = submitit.SlurmExecutor(folder=str(folder))
    extra = {"partition": wanted.get("partition"), "account": wanted.get("account"),
             "qos": wanted.get("qos")}
    executor.update_parameters(
        time=wanted["time_min"], gpus_per_node=wanted["gpus_per_job"],
        cpus_per_task=wanted["cpus_per_job"], mem=f"{wanted['mem_gb']}GB", nodes=1,
        ntasks_per_node=1, job_name="vitcls", **{k: v for k, v in extra.items() if v})
    return executor


def run_variant(runs: Sequence, pattern: str, device: str, results_dir: Path, runs_dir: Path,
                profiles: Sequence[str], extra: Dict[str, object], force: bool,
                jobs: int = 1) -> List[Dict[str, object]]:
    """The body of one submitted job: the runner on its variants (or, with none, the
    comparisons), on this job's device. Returns each page's status and message."""
    from .runner import run

    _interruptible()
    matrix = run(list(runs), pattern, device=device, jobs=jobs, results_dir=results_dir,
                 force=force, profiles=profiles, extra=extra, runs_dir=runs_dir,
                 comparisons=not runs, log=lambda *a: None)
    return [{"page": str(j.output), "status": j.status, "message": j.message} for j in matrix]


def extract_shard(run, shard: Sequence[int], results_dir: Path, device: str,
                  extra: Dict[str, object]) -> str:
    """The body of one array job: shard ``shard`` = (i, n) of the variant's main store, made
    exactly as its notebooks' ``run.store()`` would make it. Returns the store's folder."""
    from ..stores.extraction import extract
    from ..model.loading import load_variant

    _interruptible()
    model = load_variant(run.key, weights=run.weights, device=device,
                         seed=int(extra.get("seed", 0)))
    return str(extract(model, _stimuli(run, extra), results_dir,
                       batch_size=run.batch_size or 64, progress=False, shard=tuple(shard)))


def _stimuli(run, extra: Dict[str, object]):
    """The variant's stimuli as its notebooks select them (the run's n_per_class, else the
    run file's parameters')."""
    from ..datasets.kinds import build_dataset
    from ..model.registry import get_variant

    n_per_class = run.n_per_class if run.n_per_class is not None else extra.get("n_per_class")
    return build_dataset(run.dataset, run.data_dir, num_classes=get_variant(run.key).classes,
                         n_per_class=n_per_class)


def _store_complete(run, results_dir: Path, extra: Dict[str, object]) -> bool:
    """Whether the variant's main store exists already (then no array is submitted for it)."""
    from ..stores.extraction import DEFAULT_KINDS
    from ..stores.reader import existing_store

    return existing_store(run.key, _stimuli(run, extra), results_dir, DEFAULT_KINDS,
                          weights=run.weights, seed=int(extra.get("seed", 0))) is not None


def _submit_shards(made, executor: str, pending: Sequence, shards: int, devices: Sequence[str],
                   results_dir: Path, extra: Dict[str, object], submission, log) -> Dict[str, str]:
    """An array of ``shards`` extraction jobs per pending variant whose main store is missing;
    returns, per variant, the array's SLURM job id (for the notebook job's dependency)."""
    arrays = {}
    for run in pending:
        if _store_complete(run, results_dir, extra):
            continue
        shard_devices = [run.device or devices[i % len(devices)] for i in range(shards)]
        jobs = _submitted(made.map_array, extract_shard, [run] * shards,
                          [(i, shards) for i in range(shards)], [results_dir] * shards,
                          shard_devices, [extra] * shards)
        for i, job in enumerate(jobs):
            submission.jobs[f"{run.key}:shard-{i}-of-{shards}"] = job
        arrays[run.key] = str(jobs[0].job_id).split("_")[0]
        log(f"submitted {run.key}'s store as {shards} shards: array {arrays[run.key]}")
    return arrays


def _shards_of(submission: Submission, key: str) -> Submission:
    return Submission({k: j for k, j in submission.jobs.items()
                       if k.startswith(f"{key}:shard-")})


def _missing(run, pattern: str, results_dir: Path, runs_dir: Path, profiles: Sequence[str],
             extra: Dict[str, object], device: str) -> bool:
    from .runner import plan, up_to_date

    jobs = [j for profile in profiles
            for j in plan([run], pattern, results_dir, device, None, runs_dir, None, profile,
                          extra) if j.variant]
    return any(not up_to_date(j) for j in jobs)


def submit(runs: Sequence, pattern: str = "*", *, executor: str = "local",
           devices: Sequence[str] = ("auto",), results_dir: Path, runs_dir: Path,
           profiles: Sequence[str], extra: Optional[Dict[str, object]] = None,
           force: bool = False, resources: Optional[Mapping[str, object]] = None,
           folder: Optional[Path] = None, wait: bool = True, shards: int = 1,
           log=print) -> Submission:
    """Submit one job per variant whose pages are missing or stale (all with ``force``), each
    on the next of ``devices`` in turn (SLURM jobs get their GPU from SLURM: "cuda"), after an
    array of ``shards`` jobs filling its main store where that is missing; with ``wait``, wait
    for them, then run the comparisons as one more job."""
    extra = dict(extra or {})
    results_dir, runs_dir = Path(results_dir), Path(runs_dir)
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise VitclsError(f"--shards must be a whole number >= 1, not {shards!r}")
    if shards > 1 and executor == "local" and not wait:
        raise VitclsError("--shards with --no-wait needs SLURM's job dependencies; with "
                          "--executor local, leave out --no-wait (the run waits for the shards)")
    folder = Path(folder or Path(results_dir) / ".submitit")
    made = make_executor(executor, folder, resources)
    submission = Submission(folder=folder)
    with _stopped_when_interrupted(submission, executor):
        pending = []
        for run in runs:
            if not force and not _missing(run, pattern, results_dir, runs_dir, profiles, extra,
                                          devices[0]):
                submission.up_to_date.append(run.key)
                continue
            pending.append(run)
        if executor == "slurm":
            devices = ["cuda"]
        arrays = (_submit_shards(made, executor, pending, shards, devices, results_dir, extra,
                                 submission, log) if shards > 1 else {})
        failed: List[str] = []
        if executor == "local":  # no dependencies between local jobs: the arrays end first
            for key in arrays:
                lost = _wait(_shards_of(submission, key), log)
                if lost:
                    failed += lost + [f"{key}: not run, as a shard of its store failed"]
                    pending = [run for run in pending if run.key != key]
        for i, run in enumerate(pending):
            device = run.device or devices[i % len(devices)]
            if executor == "slurm":  # after its store's array, if it has one
                made.update_parameters(dependency=f"afterok:{arrays[run.key]}"
                                       if run.key in arrays else None)
            job = _submitted(made.submit, run_variant, [run], pattern, device, results_dir,
                             runs_dir, list(profiles), extra, force)
            submission.jobs[run.key] = job
            log(f"submitted {run.key} on {device}: job {job.job_id}")
        if executor == "slurm":
            made.update_parameters(dependency=None)
        if not wait:
            return submission
        failed += _wait_variants(submission, list(arrays) if executor == "slurm" else [], log)
        if _has_comparisons(pattern):
            job = _submitted(made.submit, run_variant, [], pattern, devices[0], results_dir,
                             runs_dir, list(profiles), extra, force)
            submission.jobs["compare"] = job
            failed += _wait(Submission({"compare": job}), log)
        if failed:
            raise VitclsError(f"{len(failed)} failed (pages, jobs or shards): "
                              + "; ".join(failed[:5]) + f" (job logs in {folder})")
        return submission


@contextlib.contextmanager
def _stopped_when_interrupted(submission: Submission, executor: str) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) while submitting or waiting: the local jobs started so far are
    cancelled (each stops its notebooks' kernels) before the interrupt goes on."""
    try:
        yield
    except KeyboardInterrupt:
        if executor == "local":
            for job in submission.jobs.values():
                job.cancel(check=False)
            _end_local_tasks({str(job.job_id) for job in submission.jobs.values()})
        raise


def _end_local_tasks(job_ids: Set[str], grace_s: float = 15.0) -> None:
    """End every process of these local jobs. submitit's cancel sends SIGINT to a job's
    controller, which a controller started from a process that ignores SIGINT (a pytest-xdist
    worker, ``nohup``) inherits as ignored: its task would run on and write its pages. A
    controller still there after 2 s is killed; then each process carrying a job's id gets
    SIGINT (the task's runner stops its kernels and writes nothing; jobs restore Python's
    SIGINT handler, :func:`_interruptible`), and SIGKILL if it is still there after
    ``grace_s``."""
    import psutil

    controllers = []
    for job_id in job_ids:
        with contextlib.suppress(psutil.Error, ValueError):
            controllers.append(psutil.Process(int(job_id)))
    _, alive = psutil.wait_procs(controllers, timeout=2.0)
    for controller in alive:  # gone, it can start no task after the scan below
        with contextlib.suppress(psutil.Error):
            controller.kill()
    psutil.wait_procs(alive, timeout=2.0)
    found = []
    for process in psutil.process_iter(["environ"]):
        environ = process.info.get("environ") or {}
        if environ.get("SUBMITIT_LOCAL_JOB_ID") in job_ids and process.pid != os.getpid():
            found.append(process)
    for process in found:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGINT)
    _, alive = psutil.wait_procs(found, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


def _interruptible() -> None:
    """In a job: SIGINT raises KeyboardInterrupt again, even where the submitting process
    ignored it (a child inherits an ignored SIGINT), so that a cancel stops the job."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _submitted(submit: Callable, *args):
    """``submit(*args)`` (submitit's submit or map_array); sbatch's refusal as one line (what
    sbatch says, which submitit would also print, goes into it)."""
    from submitit.core.utils import FailedJobError

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return submit(*args)
    except FailedJobError as error:
        said = " ".join(str(error).split())[-300:] or "no reason given"
        raise VitclsError(f"sbatch refused the job: {said}; check the partition, account, "
                          "qos and time limit (the run file's cluster section, or --partition "
                          "and --time-min)") from None


def _wait_variants(submission: Submission, sharded: Sequence[str], log) -> List[str]:
    """Wait for the variants' jobs; for each variant in ``sharded`` (SLURM), for its shards
    first, cancelling its notebook job when one failed (its ``afterok`` dependency can then
    never be met, and the job would stay pending). Returns the failures, as messages."""
    failed, cancelled = [], set()
    for key in sharded:
        lost = _wait(_shards_of(submission, key), log)
        if lost:
            submission.jobs[key].cancel(check=False)
            cancelled.add(key)
            failed += lost + [f"job {key}: cancelled, as a shard of its store failed"]
    return failed + _wait(Submission({k: j for k, j in submission.jobs.items()
                                      if ":shard-" not in k and k not in cancelled}), log)


def _has_comparisons(pattern: str) -> List[str]:
    from .runner import COMPARISONS, source_notebooks

    try:
        return [n.stem for n in source_notebooks(pattern) if n.stem in COMPARISONS]
    except VitclsError:
        return []


def _wait(submission: Submission, log) -> List[str]:
    """Each job's result, logged; the pages that failed, and jobs that died, as messages."""
    failed = []
    for name, job in submission.jobs.items():
        try:
            pages = job.result()
        except Exception as exc:  # the job itself died: submitit carries its traceback
            failed.append(f"job {name} ({job.job_id}): {str(exc).strip().splitlines()[-1]}")
            continue
        if isinstance(pages, str):  # a shard of a store: its folder
            log(f"job {name} ({job.job_id}): {pages}")
            continue
        for page in pages:
            if page["status"] == "failed":
                failed.append(f"{Path(page['page']).name} [{name}]: {page['message']}")
        counts = {s: sum(p["status"] == s for p in pages) for s in ("ran", "skipped", "failed")}
        log(f"job {name} ({job.job_id}): {counts['ran']} ran, {counts['skipped']} skipped, "
            f"{counts['failed']} failed")
    return failed


def main_submit(args, runs_dir: Optional[Path] = None) -> int:
    """``vitcls run --executor``: the run's settings (:func:`runner.run_settings`), the
    resources of the run file's ``cluster`` section overridden by the flags, submitted."""
    from .runner import ROOT, RUNS, run_settings

    s = run_settings(args)
    flags = {"partition": args.partition, "gpus_per_job": args.gpus_per_job,
             "cpus_per_job": args.cpus_per_job, "time_min": args.time_min,
             "mem_gb": args.mem_gb, "shards": getattr(args, "shards", None)}
    resources = {**s["resources"], **{k: v for k, v in flags.items() if v is not None}}
    shards = resources.pop("shards", 1)
    results_dir = Path(s["results_dir"] or ROOT / "results").resolve()
    done = submit(s["runs"], s["pattern"], executor=args.executor,
                  devices=s["devices"] or [s["device"]], results_dir=results_dir,
                  runs_dir=runs_dir or RUNS, profiles=s["profiles"], extra=s["extra"], force=args.force,
                  resources=resources, wait=not args.no_wait, shards=shards)
    if done.up_to_date:
        print(f"up to date, not submitted: {', '.join(done.up_to_date)}", file=sys.stderr)
    if args.no_wait:
        for name, job_id in done.job_ids.items():
            print(f"{name}\t{job_id}")
    return 0
