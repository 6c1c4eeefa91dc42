"""The run file: which variants a ``vitcls run`` executes, with what weights, data and profile.

A run file is YAML::

    profile: corrected            # or paper, or a list of both; --profile overrides
    results_dir: results          # extraction stores (relative to the run file's folder)
    device: auto                  # auto, cpu, cuda, cuda:1
    notebooks: "*"                # glob on notebook names, or a chapter (chapter1 ... chapter5)
    controls: true                # also run each variant's random-init control
    parameters: {n_points: 12}    # notebook parameters set for every notebook that has them
    data_dirs:                    # one folder per dataset kind (never one for all: B20)
      imagenet-s: /data/ImageNetS919
      cifar100: /data/cifar       # the folder holding cifar-100-python/
    defaults:                     # applied to every variant entry unless it says otherwise
      batch_size: 64
    variants:
      vit_b32: {}                 # published weights (timm hub), its own dataset kind
      vit_b16_cifar100:
        weights: /ckpt/vit_base_patch16_224-CIFAR100.pt

Entry keys: ``weights`` (a checkpoint file; none: the published weights), ``dataset``
(toy, imagenet-s, cifar100, folder; default: the variant's own), ``data_dir`` (default: the
kind's folder in ``data_dirs``), ``batch_size``, ``device``, ``n_per_class``; ``defaults``
takes the last three. :func:`load_run_file` checks the whole file before anything
runs and reports every problem at once, one line each: the YAML itself (UTF-8, size,
duplicate keys, aliases: :mod:`vitcls_utils.running.run_file_checks`), unknown keys and notebook
parameters (with the nearest known name), and every value's type (a parameter's is that of
its default in the notebooks that declare it).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..base.errors import VitclsError
from ..report.profiles import PROFILES, get_profile
from ..model.registry import (CONVIT_KEYS, GHIASI_KEYS, ORIGINAL_KEYS, PAPER_KEYS, get_variant,
                              variant_for_data)
from .run_file_checks import checked, parameter_problems, read_yaml

#: the type of each key's value, at the top of a run file and in a variant's entry
TOP_TYPES = {"profile": (str, list), "results_dir": str, "device": str, "notebooks": str,
             "controls": bool, "data_dirs": dict, "cluster": dict, "defaults": dict,
             "parameters": dict, "variants": dict}
ENTRY_TYPES = {"weights": str, "dataset": str, "data_dir": str, "batch_size": int,
               "device": str, "n_per_class": int}
TOP_KEYS, ENTRY_KEYS = tuple(TOP_TYPES), tuple(ENTRY_TYPES)
DEFAULT_KEYS = ("batch_size", "device", "n_per_class")


class RunFileError(VitclsError):
    """A run file that cannot run; the message lists every problem, one line each."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems) or (message,)


@dataclass(frozen=True)
class VariantRun:
    """One variant of a run: its weights, dataset and resources."""

    key: str
    dataset: str
    data_dir: Optional[str] = None
    weights: Optional[str] = None
    batch_size: Optional[int] = None
    device: Optional[str] = None
    n_per_class: Optional[int] = None

    def parameters(self) -> Dict[str, object]:
        """The notebook parameters this entry sets."""
        params: Dict[str, object] = {"variant": self.key, "dataset": self.dataset,
                                     "data_dir": self.data_dir, "weights": self.weights}
        if self.n_per_class is not None:
            params["n_per_class"] = self.n_per_class
        return params


@dataclass
class RunFile:
    """A validated run file."""

    variants: List[VariantRun]
    profiles: List[str] = field(default_factory=lambda: ["corrected"])
    results_dir: Optional[Path] = None
    device: str = "auto"
    notebooks: str = "*"
    path: Optional[Path] = None
    parameters: Dict[str, object] = field(default_factory=dict)
    cluster: Dict[str, object] = field(default_factory=dict)


#: names that stand for several variants on the command line
GROUPS = {
    "paper": list(PAPER_KEYS),
    "paper_random": [f"{k}_random" for k in PAPER_KEYS],
    "toy": ["toy", "toy_gap", "toy_random", "toy_convit"],
    "vit_original": list(ORIGINAL_KEYS),
    "vit_original_random": [f"{k}_random" for k in ORIGINAL_KEYS],
    # chapter 6: the ViTs and CLIP towers (the CNNs are baselines inside the notebooks)
    "ghiasi": [k for k in GHIASI_KEYS if get_variant(k).is_vit],
    "ghiasi_random": [f"{k}_random" for k in GHIASI_KEYS if get_variant(k).is_vit],
    # chapter 7: the ConViTs (each notebook reads the DeiT of the same size beside it)
    "convit": [k for k in CONVIT_KEYS if get_variant(k).family == "convit"],
    "convit_random": [f"{k}_random" for k in CONVIT_KEYS if get_variant(k).family == "convit"],
}


def expand_variants(names: Sequence[str]) -> List[str]:
    """Group names (paper, paper_random, toy, vit_original, vit_original_random, ghiasi,
    ghiasi_random, convit, convit_random) and keys -> validated registry keys, in order."""
    keys: List[str] = []
    for name in names:
        for key in GROUPS.get(name, [name]):
            get_variant(key)  # unknown keys fail here, before anything runs
            if key not in keys:
                keys.append(key)
    return keys


def default_dataset(key: str) -> str:
    """The dataset kind a variant was analysed on (``folder`` when the kind is not built in)."""
    from ..datasets.kinds import KINDS

    kind = get_variant(key).dataset
    return kind if kind in KINDS else "folder"


def entry_problems(run: VariantRun) -> List[str]:
    """Everything that would stop this entry's notebooks, checked without running a model."""
    from ..datasets.interface import file_stamp
    from ..datasets.kinds import KINDS, build_dataset

    spec = get_variant(run.key)
    problems = []
    if run.dataset not in KINDS:
        return [f"{run.key}: unknown dataset {run.dataset!r}; kinds: {', '.join(KINDS)}"]
    if run.weights is not None:
        path = Path(run.weights).expanduser()
        if not path.is_file():
            problems.append(f"{run.key}: weights file not found: {path}")
        else:
            found = fitting_problems(run.key, str(path), file_stamp(path))
            if found:
                shown = "; ".join(found[:3]) + (f"; ... ({len(found)} in all)"
                                                if len(found) > 3 else "")
                problems.append(f"{run.key}: weights {path.name} do not fit {spec.arch}: {shown}")
    elif spec.weights == "user":
        problems.append(f"{run.key}: needs weights: FILE ({spec.weights_hint})")
    if run.batch_size is not None and (not isinstance(run.batch_size, int)
                                       or isinstance(run.batch_size, bool)
                                       or run.batch_size < 1):
        problems.append(f"{run.key}: batch_size must be a positive integer, not "
                        f"{run.batch_size!r}")
    if run.n_per_class is not None and (not isinstance(run.n_per_class, int)
                                        or run.n_per_class < 1):
        problems.append(f"{run.key}: n_per_class must be a positive integer, not "
                        f"{run.n_per_class!r}")
    if run.device is not None:
        problems += [f"{run.key}: {p}" for p in device_problems(run.device)]
    if run.dataset != "toy" and not run.data_dir:
        offline = "; a random-init control also runs offline with --data toy" if spec.random else ""
        problems.append(f"{run.key}: runs on {run.dataset} and needs data_dir (--data-dir on "
                        f"the command line){offline}")
    elif run.dataset != "toy" and not Path(run.data_dir).expanduser().is_dir():
        problems.append(f"{run.key}: data_dir not found: {run.data_dir}")
    else:
        try:
            build_dataset(run.dataset, run.data_dir, num_classes=spec.classes,
                          n_per_class=run.n_per_class)
        except VitclsError as exc:
            first = str(exc).strip().splitlines()[0]
            problems.append(f"{run.key}: {run.dataset} at {run.data_dir}: {first}")
    return problems


@lru_cache(maxsize=64)
def fitting_problems(key: str, path: str, stamp: tuple) -> Tuple[str, ...]:
    """Why a checkpoint does not fit a variant, once per file version (its ``stamp``): a run
    file is checked again, whole, before the run starts, and a checkpoint is large."""
    from ..model.loading import checkpoint_problems

    return tuple(checkpoint_problems(key, path))


def device_problems(device: str) -> List[str]:
    """A device name that torch cannot parse (``gpu``) is a problem; CUDA's presence is
    checked when the notebook runs, on the machine that runs it."""
    if device == "auto":
        return []
    import torch

    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        return [f"device {device!r} is not a torch device; use auto, cpu, cuda or cuda:N"]
    return []


#: the resources a run file's ``cluster`` section (or ``vitcls run``'s flags) may set
RESOURCES = {"partition": str, "gpus_per_job": int, "cpus_per_job": int, "time_min": int,
             "mem_gb": int, "account": str, "qos": str, "shards": int}


def resource_problems(resources: Mapping[str, object]) -> List[str]:
    """Unknown keys and values of the wrong type or sign in a ``cluster`` section."""
    problems = []
    for key, value in resources.items():
        kind = RESOURCES.get(key)
        least = 0 if key == "gpus_per_job" else 1
        if kind is None:
            problems.append(f"cluster: unknown key {key!r} (keys: {', '.join(RESOURCES)})")
        elif not isinstance(value, kind) or isinstance(value, bool) or (
                kind is int and value < least):
            problems.append(f"cluster: {key} must be "
                            f"{'an integer >= ' + str(least) if kind is int else 'a name'}, "
                            f"not {value!r}")
    return problems


def parse_devices(text: Union[str, Sequence[str], None]) -> List[str]:
    """``"cuda:0,cuda:1"`` (or a list) -> the device names, each one torch can parse."""
    names = [d.strip() for d in (text.split(",") if isinstance(text, str) else text or [])
             if d.strip()]
    if not names:
        raise VitclsError("--devices takes a comma-separated list, e.g. cuda:0,cuda:1 or cpu,cpu")
    problems = [p for name in names for p in device_problems(name)]
    if problems:
        raise VitclsError("; ".join(problems))
    return names


def is_profile(name: object) -> bool:
    """Whether ``name`` selects a settings profile (an old name of one included)."""
    try:
        get_profile(str(name))
    except VitclsError:
        return False
    return True


def _kinds() -> Tuple[str, ...]:
    from ..datasets.kinds import KINDS

    return tuple(KINDS)


def _as_list(value) -> List[str]:
    return [value] if isinstance(value, str) else list(value or [])


def parse(data: object, base: Path, source: str = "run file") -> RunFile:
    """A run file's YAML content -> :class:`RunFile`, or one :class:`RunFileError` naming
    every problem. Relative paths are taken from ``base`` (the run file's folder)."""
    from ..base.errors import UnknownVariantError
    from ..model.registry import VARIANTS, get_variant

    if not isinstance(data, dict):
        raise RunFileError(f"{source}: expected a mapping with a 'variants' entry, got "
                           f"{type(data).__name__}")
    top, problems = checked("", data, TOP_TYPES)
    profiles = _as_list(top.get("profile", "corrected"))
    problems += [f"unknown profile {p!r} (profiles: {', '.join(PROFILES)})" for p in profiles
                 if not is_profile(p)]
    device = top.get("device", "auto")
    problems += device_problems(device)
    defaults, found = checked("defaults: ", top.get("defaults", {}),
                              {k: ENTRY_TYPES[k] for k in DEFAULT_KEYS})
    data_dirs, more = checked("data_dirs: ", top.get("data_dirs", {}), dict.fromkeys(_kinds(), str))
    cluster = top.get("cluster", {})
    problems += found + more + resource_problems(cluster)
    parameters = top.get("parameters", {})
    reserved = set(ENTRY_KEYS) | {"variant", "profile", "results_dir"}
    problems += [f"parameters: {k!r} is set per variant or by the run, not here"
                 for k in parameters if k in reserved]
    problems += parameter_problems({k: v for k, v in parameters.items() if k not in reserved})
    entries = top.get("variants")
    if not entries:
        problems.append("variants must be a non-empty mapping of registry keys to entries")
        entries = {}

    def resolve(value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        expanded = os.path.expandvars(str(value))
        unset = re.findall(r"\$\{?(\w+)", expanded)
        if unset:
            problems.append(f"{value}: environment variable {unset[0]} is not set")
            return None
        path = Path(expanded).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    runs: List[VariantRun] = []
    for key, entry in entries.items():
        entry = entry or {}
        if str(key).startswith("timm:"):
            try:
                get_variant(key)
            except UnknownVariantError as exc:
                problems.append(str(exc))
                continue
        elif key not in VARIANTS:
            near = [k for k in VARIANTS if k.startswith(str(key).split("_")[0])][:8]
            problems.append(f"unknown variant {key!r}" + (f" (did you mean one of: "
                                                          f"{', '.join(near)}?)" if near else ""))
            continue
        if not isinstance(entry, dict):
            problems.append(f"{key}: entry must be a mapping, not {type(entry).__name__}")
            continue
        entry, found = checked(f"{key}: ", entry, ENTRY_TYPES)
        problems += found
        merged = {**{k: v for k, v in defaults.items() if k in DEFAULT_KEYS}, **entry}
        dataset = merged.get("dataset") or default_dataset(key)
        data_dir = None if dataset == "toy" else entry.get("data_dir", data_dirs.get(dataset))
        try:  # a random timm head takes the data's classes; a published one must fit them
            key = variant_for_data(key, dataset).key
        except VitclsError as exc:
            problems.append(str(exc))
            continue
        run = VariantRun(key=key, dataset=dataset, data_dir=resolve(data_dir),
                         weights=resolve(entry.get("weights")),
                         batch_size=merged.get("batch_size"), device=merged.get("device"),
                         n_per_class=merged.get("n_per_class"))
        runs.append(run)
    if top.get("controls"):
        for run in list(runs):
            control = get_variant(run.key).random_key
            if control not in {r.key for r in runs}:
                runs.append(VariantRun(key=control, dataset=run.dataset, data_dir=run.data_dir,
                                       batch_size=run.batch_size, device=run.device,
                                       n_per_class=run.n_per_class))
    for run in runs:
        problems += entry_problems(run)
    _raise(source, problems)
    results_dir = top.get("results_dir")
    return RunFile(variants=runs, profiles=profiles, device=device, parameters=parameters,
                   cluster=dict(cluster),
                   results_dir=Path(resolve(results_dir)) if results_dir else None,
                   notebooks=top.get("notebooks", "*"))


def load_run_file(path: Union[str, os.PathLike]) -> RunFile:
    """Read and validate a run file (see the module docstring for the schema)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RunFileError(f"run file not found: {path}")
    data, problems = read_yaml(path)
    if data is None:
        _raise(str(path), problems)
    try:
        runfile = parse(data, path.resolve().parent, source=str(path))
    except RunFileError as error:  # the YAML's own problems first, then the schema's
        _raise(str(path), problems + list(error.problems))
    _raise(str(path), problems)
    runfile.path = path
    return runfile


def from_arguments(variants: Sequence[str], dataset: Optional[str], data_dir: Optional[str],
                   weights: Sequence[str] = (), groups: bool = True) -> List[VariantRun]:
    """The entries of ``vitcls run --variants ...`` without a run file: one dataset kind and
    folder for all (or each variant's own kind), ``--weights KEY=FILE`` per variant. Group
    names (toy, paper, paper_random) expand unless ``groups`` is False."""
    given: Dict[str, str] = {}
    for item in weights:
        key, sep, file = item.rpartition("=")  # timm keys may hold "=" (img_size=N)
        if not sep:
            raise VitclsError(f"--weights takes KEY=FILE, not {item!r}")
        given[key] = file
    runs = []
    keys = expand_variants(variants) if groups else [get_variant(k).key for k in variants]
    for key in keys:
        kind = dataset or default_dataset(key)  # a random timm head takes the data's classes:
        runs.append(VariantRun(key=variant_for_data(key, kind).key, dataset=kind,
                               data_dir=data_dir if kind != "toy" else None,
                               weights=given.get(key)))
    unknown = set(given) - set(keys)
    if unknown:
        raise VitclsError(f"--weights names variants that are not run: {', '.join(unknown)}")
    return runs


def check(runs: Sequence[VariantRun], source: str = "the run") -> Tuple[VariantRun, ...]:
    """Every problem of a list of entries at once, as one :class:`RunFileError`."""
    _raise(source, [p for run in runs for p in entry_problems(run)])
    return tuple(runs)


def _raise(source: str, problems: Sequence[str]) -> None:
    if problems:
        raise RunFileError(f"{source} has {len(problems)} problem(s); nothing was run:\n"
                           + "\n".join(f"  - {p}" for p in problems), problems=problems)
