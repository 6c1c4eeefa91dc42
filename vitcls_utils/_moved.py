"""The flat package's import paths, kept working after the move into layer subpackages.

``import vitcls_utils.extract`` gives the module that now lives at
``vitcls_utils.stores.extraction`` (the same module object, so patching one patches the other)
and warns once with a ``FutureWarning`` that names the new path, as timm does for its moved
modules. The few old modules whose contents went to several new ones (the tables beside the
papers' numbers left the analysis modules; the figure theme left ``plots``) give a small module
that forwards each attribute to where it lives now. Nothing here is imported until an old
path is asked for; the finder itself costs a dictionary lookup per ``vitcls_utils.*`` import.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Callable, Dict, List

#: old module -> its module now (under vitcls_utils)
MOVED: Dict[str, str] = {
    "errors": "base.errors", "sites": "base.sites", "progress": "base.progress",
    "stats": "base.stats",
    "dataset_base": "datasets.interface", "data": "datasets.kinds",
    "imagenet_s": "datasets.imagenet_s", "cifar": "datasets.cifar", "images": "datasets.images",
    "masks": "datasets.masks", "preprocess": "datasets.preprocess", "toy": "datasets.toy",
    "registry": "model.registry", "hooks": "model.hooks",
    "projection": "model.projection", "perturb": "model.perturbations",
    "overrides": "model.parameter_overrides",
    "store": "stores.format", "store_reader": "stores.reader",
    "reduce": "stores.site_reducer", "shards": "stores.shards", "batching": "stores.batch_size",
    "loader": "stores.stimulus_loader", "stimulus_cache": "stores.stimulus_cache",
    "toy_training": "training.toy_models", "sample_efficiency": "training.sample_efficiency",
    "identifiability": "analysis.identifiability", "explain": "analysis.explanation_maps",
    "explanation_cases": "analysis.explanation_cases", "fewshot": "analysis.fewshot",
    "anatomy": "analysis.anatomy", "isolation": "analysis.cls_isolation",
    "patch_readout": "analysis.patch_readout", "block_readout": "analysis.block_readout",
    "edits": "analysis.stimulus_edits", "fgbg": "analysis.foreground_background",
    "lowpass": "analysis.lowpass", "convit": "analysis.convit",
    "featureviz": "analysis.featureviz",
    "profiles": "report.profiles", "anatomy_plots": "report.vit_figures",
    "ghiasi_plots": "report.ghiasi_figures",
    "convit_tables": "report.convit_tables", "convit_plots": "report.convit_figures",
    "widgets": "report.explorers", "twins": "report.explorer_twins",
    "cli": "running.cli", "runner": "running.runner", "kernels": "running.jupyter_kernels",
    "cluster": "running.cluster", "runfile": "running.run_file", "dryrun": "running.dry_run",
    "colab": "running.colab", "notebook_rules": "running.notebook_rules",
    "reference_outputs": "running.reference_outputs",
}

#: old module -> the modules its names live in now, searched in order
SPLIT: Dict[str, List[str]] = {
    "paper": ["report.reported", "report.vilas_tables", "report.vit_tables", "report.page"],
    "plots": ["report.vilas_figures", "report.style", "report.page"],
    "book": ["report.notebook", "report.page"],
    "context_metrics": ["analysis.context", "report.vilas_tables"],
    "memories": ["analysis.memories", "report.vilas_tables"],
    "probing": ["analysis.probing", "report.vilas_tables"],
    "faithfulness": ["analysis.faithfulness", "report.vilas_tables"],
    "variants": ["model.registry", "model.loading", "model.layout"],
    "loading": ["model.loading", "model.layout"],
    "extract": ["stores.extraction", "analysis.evaluation"],
    "ghiasi": ["report.ghiasi_tables", "report.ghiasi_bridges"],
}

PACKAGE = __name__.rpartition(".")[0]


_MACHINERY = ("<frozen importlib", importlib.__file__.rpartition("/")[0], __file__)


def _warn(message: str) -> None:
    """A FutureWarning attributed to the first frame outside the import machinery (the line
    that imported the old path)."""
    frame, level = sys._getframe(1), 2  # level 2: the caller of this function
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_MACHINERY):
        frame = frame.f_back
        # warnings skips importlib's frozen frames itself; only the others count
        level += not frame.f_code.co_filename.startswith("<frozen importlib")
    warnings.warn(message, FutureWarning, stacklevel=level)


class _Forwarder(types.ModuleType):
    """An old module whose names now live in several modules: each attribute from the first
    of them that has it."""

    def __init__(self, name: str, targets: List[str]) -> None:
        super().__init__(name, f"Moved: its names now live in {', '.join(targets)}.")
        self.__targets = [f"{PACKAGE}.{t}" for t in targets]

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        for target in self.__targets:
            module = importlib.import_module(target)
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")

    def __dir__(self) -> List[str]:
        return sorted({name for target in self.__targets
                       for name in dir(importlib.import_module(target))})


class _OldPathLoader(importlib.abc.Loader):
    def __init__(self, old: str) -> None:
        self.old = old

    def create_module(self, spec):
        if self.old in MOVED:
            new = f"{PACKAGE}.{MOVED[self.old]}"
            _warn(f"{PACKAGE}.{self.old} has moved to {new}: import it from there")
            return importlib.import_module(new)
        targets = SPLIT[self.old]
        _warn(f"{PACKAGE}.{self.old} has moved; its names now live in "
              + ", ".join(f"{PACKAGE}.{t}" for t in targets))
        return _Forwarder(spec.name, targets)

    def exec_module(self, module) -> None:
        """Nothing to run: the module is the moved one, already executed."""


class _OldPathFinder(importlib.abc.MetaPathFinder):
    """Finds ``vitcls_utils.<old flat module>`` and nothing else."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, old = fullname.partition(".")
        if package != PACKAGE or not old or "." in old or (old not in MOVED
                                                            and old not in SPLIT):
            return None
        return importlib.machinery.ModuleSpec(fullname, _OldPathLoader(old))


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _OldPathFinder) for f in sys.meta_path):
        sys.meta_path.append(_OldPathFinder())


def renamed(module: str, names: Dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that keeps renamed functions reachable under their old names,
    with a FutureWarning naming the new one (``names``: old -> new)."""

    def __getattr__(attr: str):
        if attr in names:
            _warn(f"{module}.{attr} is now {module}.{names[attr]}")
            return getattr(sys.modules[module], names[attr])
        raise AttributeError(f"module {module!r} has no attribute {attr!r}")

    return __getattr__
