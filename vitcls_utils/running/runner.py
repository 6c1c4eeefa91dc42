"""The notebook runner: every figure notebook x every variant, executed with papermill into
``book/runs/``.

``vitcls run`` executes ``notebooks/<name>.ipynb`` for each variant into
``book/runs/<variant>/<name>.ipynb`` (``<variant>-authors/`` under the authors' settings; the
cross-variant notebooks once per profile, into ``book/runs/compare/``), titled for the book
with their parameter cells hidden and a line saying the profile, weights and data. What runs
comes from a run file (:mod:`vitcls_utils.running.run_file`) or from ``--variants``. Extraction is
shared: every run of a variant reads the same store in ``results_dir``. A run is skipped when
its output was made from the same inputs: notebook source, parameters, the package's source,
and the contents of the data and weights it read (:mod:`vitcls_utils.running.page_key`). A failed
notebook does not stop the others; the summary lists what ran, was skipped and failed.
"""
from __future__ import annotations

import fnmatch
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Deque, Dict, List, Optional, Sequence, Union

from .. import __version__

from . import colab

from . import jupyter_kernels as kernels

from ..stores import stimulus_cache
from ..base.errors import VitclsError
from .page_key import combined, key_parts, stale_page
from .notebook_rules import (COMPARISONS, CONVIT_CHAPTER, HEADLESS_CHAPTER,  # noqa: F401
                             HEADLESS_NOTEBOOKS, NEEDS_CLS, NEEDS_MASKS, NEEDS_PROBE_SPLIT,
                             TOY_ONLY, applies, chapters, check_runnable)
from ..report.profiles import DEFAULT_PROFILE, get_profile
from ..model.registry import get_variant
from .run_file import GROUPS, VariantRun, expand_variants, from_arguments  # noqa: F401
from ..base import paths

ROOT = paths.ROOT
NOTEBOOKS = ROOT / "notebooks"
RUNS = ROOT / "book" / "runs"
@dataclass
class Job:
    """One notebook execution."""

    notebook: Path
    output: Path
    parameters: Dict[str, object]
    variant: Optional[str]
    status: str = "pending"
    message: str = ""
    seconds: float = 0.0

    @property
    def key_parts(self) -> Dict[str, str]:
        """What the output depends on, a digest each (:func:`.page_key.key_parts`)."""
        return key_parts(self.notebook, self.parameters, self.variant)

    @property
    def key(self) -> str:
        """The page's key: one hash of :attr:`key_parts`."""
        return combined(self.key_parts)


def source_notebooks(pattern: str = "*") -> List[Path]:
    """Figure notebooks in ``notebooks/`` whose name matches the glob ``pattern``, or those of
    a chapter (``chapter1``, ...)."""
    book_chapters = chapters()
    if pattern in book_chapters:
        return [NOTEBOOKS / f"{name}.ipynb" for name in book_chapters[pattern]]
    found = [p for p in sorted(NOTEBOOKS.glob("*.ipynb"))
             if fnmatch.fnmatch(p.stem, pattern) or fnmatch.fnmatch(p.name, pattern)]
    if not found:
        raise VitclsError(f"no notebook in {NOTEBOOKS} matches {pattern!r}")
    return found


def notebook_parameters(notebook: Path) -> List[str]:
    """The names its parameters cell assigns: what a run may set in that notebook."""
    return list(colab.default_parameters(notebook))


def run_folder(variant: Optional[str], profile: str) -> str:
    """``book/runs/`` sub-folder of a variant's (or the comparisons') runs under a profile
    (``<variant>-authors`` under the authors' settings, whichever name selected them)."""
    profile = get_profile(profile).name
    name = variant or "compare"
    return name if profile == DEFAULT_PROFILE else f"{name}-{profile}"


def plan(variants: Sequence[Union[str, VariantRun]], pattern: str, results_dir: Path,
         device: str, data_dir: Optional[str] = None, runs_dir: Path = RUNS,
         dataset: Optional[str] = None, profile: str = DEFAULT_PROFILE,
         extra: Optional[Dict[str, object]] = None) -> List[Job]:
    """The jobs of the matrix under one profile, per-variant runs first, comparisons last.

    ``variants`` are run-file entries, or registry keys that run on ``dataset`` (default:
    each variant's own) from ``data_dir``. Notebooks that need segmentation masks run only on
    datasets that have them. ``extra`` parameters go to the notebooks that declare them."""
    profile = get_profile(profile).name  # "paper", the old name, runs as "authors"
    runs = [v for v in variants if isinstance(v, VariantRun)]
    keys = [v for v in variants if not isinstance(v, VariantRun)]
    runs += from_arguments(keys, dataset, data_dir, groups=False) if keys else []
    jobs = []
    notebooks = source_notebooks(pattern)
    for run in runs:
        if run.dataset != "toy" and not run.data_dir:
            raise VitclsError(f"{run.key} runs on {run.dataset}: pass --data-dir (or data_dirs "
                              "in a run file)")
        spec = get_variant(run.key)
        check_runnable(run.key, spec)
        for notebook in notebooks:
            declared = notebook_parameters(notebook)
            given = {k: v for k, v in (extra or {}).items() if k in declared}
            if not applies(notebook.stem, spec, run.dataset, given):
                continue
            params = {**given, **run.parameters(), "device": run.device or device,
                      "results_dir": str(results_dir), "profile": profile}
            output = runs_dir / run_folder(run.key, profile) / notebook.name
            jobs.append(Job(notebook, output, params, run.key))
    for notebook in notebooks:
        if notebook.stem in COMPARISONS:
            params = {"results_dir": str(results_dir), "device": device, "profile": profile}
            output = runs_dir / run_folder(None, profile) / notebook.name
            jobs.append(Job(notebook, output, params, None))
    return jobs


def expected_seconds(notebook: Path) -> float:
    """How long the notebook ran on the toy when its reference outputs were stored (0 when
    unknown): the runner starts the longest first."""
    import nbformat

    meta = nbformat.read(notebook, as_version=4).metadata.get("vitcls", {})
    return float(meta.get("seconds", 0.0))


def up_to_date(job: Job) -> bool:
    """True when the output exists, succeeded, and was made from the same inputs."""
    return why_stale(job) is None


def why_stale(job: Job) -> Optional[str]:
    """Why the page must run (again), in a few words; None when it is up to date."""
    return stale_page(job.output, job.key_parts)


def _title(job: Job) -> str:
    import nbformat

    source = nbformat.read(job.notebook, as_version=4)
    heading = next((line[2:].strip() for c in source.cells if c.cell_type == "markdown"
                    for line in c.source.splitlines() if line.startswith("# ")), job.notebook.stem)
    profile = get_profile(job.parameters.get("profile"))
    suffix = "" if profile.name == DEFAULT_PROFILE else f" ({profile.title})"
    if job.variant is None:
        return heading + suffix
    return f"{heading.split(':')[0]}: {get_variant(job.variant).label}{suffix}"


_FILE_IDS: Dict[str, str] = {}  # weights file -> its identity, hashed once per process


def weights_description(job: Job) -> str:
    """Which weights a run used, for its page: the file and its hash, or where they come from."""
    weights = job.parameters.get("weights")
    if weights:
        if weights not in _FILE_IDS:
            from ..model.loading import weights_identity

            _FILE_IDS[weights] = weights_identity(job.variant or "", weights=weights)
        return f"`{_FILE_IDS[weights]}`"
    spec = get_variant(job.variant or "")
    if spec.random:
        return f"random init (timm default, seed {job.parameters.get('seed', 0)})"
    return spec.weights_hint or spec.timm_name


def run_line(job: Job) -> str:
    """The line under a run page's title: profile, weights, data."""
    profile = get_profile(str(job.parameters.get("profile", DEFAULT_PROFILE)))
    parts = [f"**Settings:** {profile.describe()}."]
    if job.variant is not None:
        data = job.parameters.get("dataset")
        parts.append(f"**Weights:** {weights_description(job)}. **Data:** {data}"
                     + (f" at `{job.parameters['data_dir']}`" if job.parameters.get("data_dir")
                        else "") + ".")
    return " ".join(parts)


def execute(job: Job, stop: Optional[threading.Event] = None, keep_kernel: bool = False) -> Job:
    """Run one job with papermill in this thread's warm kernel (:mod:`.jupyter_kernels`); on
    success, title it for the book and write it atomically (removing an earlier failure file).
    Stopped by ``stop`` (Ctrl-C), even as it finishes, it leaves nothing behind. The kernel is
    kept for the thread's next job with ``keep_kernel``, never after a failure."""
    import nbformat
    import papermill

    started = time.perf_counter()
    job.output.parent.mkdir(parents=True, exist_ok=True)
    partial = job.output.with_name(f".{job.output.stem}.partial.ipynb")
    failed = job.output.with_name(f"{job.output.stem}.failed.ipynb")
    try:
        papermill.execute_notebook(  # no cwd: papermill would chdir this process, and
            str(job.notebook), str(partial), parameters=job.parameters,  # threads race on it
            kernel_name="python3", progress_bar=False, log_output=False,
            engine_name=kernels.register_engine(), kernel_cwd=str(NOTEBOOKS))
        executed = nbformat.read(partial, as_version=4)
        kernels.renumber(executed)
        first = executed.cells[0]
        if first.cell_type == "markdown":  # the book's title: figure and variant
            lines = first.source.splitlines()
            first.source = "\n".join(
                [f"# {_title(job)}", "", run_line(job), "",
                 colab.parameters_line(job.notebook, job.parameters)]
                + [ln for ln in lines[1:] if "colab.research.google.com" not in ln])
        for cell in executed.cells:
            tags = cell.metadata.get("tags", [])
            if "parameters" in tags or "injected-parameters" in tags:
                cell.metadata["tags"] = sorted(set(tags) | {"remove-cell"})
        parts = job.key_parts
        executed.metadata["vitcls"] = {"key": combined(parts), "key_parts": parts, "status": "ok",
                                       "parameters": job.parameters, "version": __version__}
        nbformat.write(executed, partial)
        if stop is not None and stop.is_set():  # stopped while it finished: no page
            raise KeyboardInterrupt
        os.replace(partial, job.output)
        failed.unlink(missing_ok=True)  # stale: this run succeeded
        job.status = "ran"
    except BaseException as exc:  # papermill's PapermillExecutionError carries the cell's error
        if (stop is not None and stop.is_set()) or not isinstance(exc, Exception):
            partial.unlink(missing_ok=True)
            job.status = "interrupted"
            if not isinstance(exc, Exception):
                raise
        else:
            job.status = "failed"
            job.message = _short_error(exc)
            if partial.exists():
                os.replace(partial, failed)
                job.message += f" (executed notebook: {failed})"
    finally:
        job.seconds = time.perf_counter() - started
        if job.status != "ran" or not keep_kernel:
            kernels.discard_thread_kernel()
    return job


def _short_error(exc: Exception) -> str:
    name = getattr(exc, "ename", type(exc).__name__)
    value = str(getattr(exc, "evalue", exc)).strip().splitlines()
    return f"{name}: {value[-1] if value else ''}"[:500]


def run(variants: Sequence[Union[str, VariantRun]], pattern: str = "*", device: str = "auto",
        jobs: int = 1, data_dir: Optional[str] = None, results_dir: Optional[Path] = None,
        force: bool = False, runs_dir: Path = RUNS, dataset: Optional[str] = None,
        profiles: Sequence[str] = (DEFAULT_PROFILE,), extra: Optional[Dict[str, object]] = None,
        log=print, devices: Optional[Sequence[str]] = None, comparisons: bool = True
        ) -> List[Job]:
    """Execute the matrix under each profile on ``jobs`` workers, each with a warm kernel
    and, on a machine with several GPUs, a device of its own. Any worker takes the next
    notebook; the stores' locks make the first notebook of a variant extract while the others
    of that variant wait for it. Comparisons run after every variant's notebooks. The profiles
    share the stores: only the notebooks run again. ``devices`` (``--devices cuda:0,cuda:1``)
    gives the workers their devices in turn, one worker each at least; ``comparisons=False``
    leaves the comparisons out (a cluster job of one variant)."""
    results_dir = Path(results_dir or ROOT / "results").resolve()
    matrix = [job for profile in profiles
              for job in plan(variants, pattern, results_dir, device, data_dir, runs_dir,
                              dataset, profile, extra) if comparisons or job.variant]
    devices = list(devices) if devices else _devices(device, jobs)
    jobs = max(jobs, len(devices)) if len(devices) > 1 else jobs
    kernels.share_cpus(jobs)
    stop = threading.Event()

    def run_one(slot: int, job: Job) -> None:
        if "device" in job.parameters and job.parameters["device"] == device:
            job.parameters["device"] = devices[slot % len(devices)]
        why = "forced" if force else why_stale(job)
        if why is None:
            job.status = "skipped"
            log(f"skip  {job.output.relative_to(runs_dir.parent)} (up to date)")
            return
        log(f"run   {job.output.relative_to(runs_dir.parent)} ({why})")
        execute(job, stop, keep_kernel=True)
        if job.status != "interrupted":
            done = "ok" if job.status == "ran" else f"FAILED: {job.message}"
            log(f"      {job.output.stem} [{job.variant or 'compare'}]: "
                f"{job.seconds:.0f} s, {done}")

    def worker(slot: int, queue: Deque[Job]) -> None:
        try:
            while not stop.is_set() and queue:
                try:
                    job = queue.popleft()
                except IndexError:
                    return
                run_one(slot, job)
        finally:
            kernels.discard_thread_kernel()

    stimulus_cache.warm([j.parameters for j in matrix  # each JPEG decoded once per geometry
                         if j.variant and (force or not up_to_date(j))], log=log)
    for stage in ([j for j in matrix if j.variant is not None],
                  [j for j in matrix if j.variant is None]):
        queue = deque(sorted(stage, key=lambda j: -expected_seconds(j.notebook)))
        _run_threads(stop, jobs, [(worker, (i, queue)) for i in range(max(1, jobs))])
    return matrix


def _run_threads(stop: threading.Event, jobs: int, calls) -> None:
    """Run ``calls`` on ``jobs`` threads. Ctrl-C (in the main thread, which only waits) sets
    ``stop``, kills the running kernels, lets the threads return and re-raises: the run ends
    within a second or two, with no partial output."""
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    futures = [pool.submit(function, *args) for function, args in calls]
    try:
        while not all(f.done() for f in futures):
            wait(futures, timeout=0.2)
    except KeyboardInterrupt:
        stop.set()
        for future in futures:
            future.cancel()
        kernels.kill_kernels()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    for future in futures:
        future.result()  # a bug in the runner itself is raised, not swallowed


def _devices(device: str, jobs: int) -> List[str]:
    if device not in ("auto", "cuda") or jobs <= 1:
        return [device]
    import torch

    count = torch.cuda.device_count()
    return [f"cuda:{i}" for i in range(count)] if count else [device]


def summary(matrix: Sequence[Job]) -> str:
    """Counts, and every failure with its message."""
    counts = {s: sum(j.status == s for j in matrix) for s in ("ran", "skipped", "failed")}
    lines = [f"{counts['ran']} ran, {counts['skipped']} skipped, {counts['failed']} failed"]
    lines += [f"  failed: {j.output.name} [{j.variant}]: {j.message}" for j in matrix
              if j.status == "failed"]
    return "\n".join(lines)


def run_settings(args) -> dict:
    """``vitcls run``'s arguments and run file, merged and checked (every problem of either is
    reported before any notebook starts): runs, pattern, device, devices, results_dir,
    profiles, extra parameters and the run file's cluster resources."""
    from .run_file import check, load_run_file, parse_devices

    resources: Dict[str, object] = {}
    if args.config:
        if args.variants or args.data or args.data_dir or args.weights:
            raise VitclsError("--config names the variants, data and weights: drop --variants, "
                              "--data, --data-dir and --weights (or drop --config)")
        runfile = load_run_file(args.config)
        runs, profiles, extra = runfile.variants, runfile.profiles, runfile.parameters
        pattern = args.notebooks or runfile.notebooks
        device = args.device or runfile.device
        results_dir = args.results_dir or runfile.results_dir
        resources = runfile.cluster
    else:
        runs = list(check(from_arguments(args.variants or ["toy"], args.data, args.data_dir,
                                         args.weights or ())))
        profiles, extra = [DEFAULT_PROFILE], {}
        pattern, device, results_dir = args.notebooks or "*", args.device or "auto", \
            args.results_dir
    if results_dir is not None:
        from ..stores.format import check_out_folder

        check_out_folder(results_dir, "--results-dir")
    if args.profile:
        profiles = [args.profile]
    for profile in profiles:
        get_profile(profile)
    devices = parse_devices(args.devices) if getattr(args, "devices", None) else None
    return {"runs": runs, "pattern": pattern, "device": device, "devices": devices,
            "results_dir": results_dir, "profiles": profiles, "extra": extra,
            "resources": resources}


def main_run(args, runs_dir: Path = RUNS) -> int:
    """``vitcls run`` on this machine (see cli.py for the options)."""
    s = run_settings(args)
    matrix = run(s["runs"], s["pattern"], device=s["device"], jobs=args.jobs,
                 results_dir=s["results_dir"], force=args.force, profiles=s["profiles"],
                 extra=s["extra"], runs_dir=runs_dir, devices=s["devices"])
    print(summary(matrix), file=sys.stderr)
    return 1 if any(j.status == "failed" for j in matrix) else 0
