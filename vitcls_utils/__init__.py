"""vitcls_utils: load the paper's ViT variants, hook them, project tokens onto class space, and
reduce whole datasets to compact per-token metrics.

The package is layered; each layer is a subpackage and imports only from the layers before it
(``ARCHITECTURE.md`` has the map, ``tests/test_architecture.py`` enforces it)::

    base  datasets  model  stores  training  analysis  report  running

The names below are exported lazily, so that ``import vitcls_utils`` stays cheap (the CLI and
the torchvision shim import it at start). The flat package's module paths (``extract``,
``paper``, ... directly under the package) still import, with a FutureWarning naming the new
path (:mod:`vitcls_utils._moved`).
"""
from __future__ import annotations

import importlib
from typing import Any

from . import _compat, _moved

_compat.install_import_hook()
_moved.install()

__version__ = "0.1.0"

_EXPORTS = {
    "VitclsError": "base.errors",
    "UnknownVariantError": "base.errors",
    "WeightsError": "base.errors",
    "DatasetError": "base.errors",
    "StoreError": "base.errors",
    "IncompleteStoreError": "base.errors",
    "DamagedStoreError": "base.errors",
    "Preprocess": "datasets.preprocess",
    "ImageFolderDataset": "datasets.kinds",
    "ToyDataset": "datasets.kinds",
    "ImageNetSDataset": "datasets.kinds",
    "Cifar100Dataset": "datasets.kinds",
    "Variant": "model.registry",
    "VARIANTS": "model.registry",
    "get_variant": "model.registry",
    "list_variants": "model.registry",
    "load_variant": "model.loading",
    "capture": "model.hooks",
    "run_with_cache": "model.hooks",
    "site_names": "model.hooks",
    "ClassProjector": "model.projection",
    "rank_of_true_class": "model.projection",
    "AttentionPerturbation": "model.perturbations",
    "TokenRemoval": "model.perturbations",
    "open_store": "stores.reader",
    "find_stores": "stores.reader",
    "Store": "stores.reader",
    "store_for": "stores.extraction",
    "evaluate": "analysis.evaluation",
    "get_profile": "report.profiles",
    "Profile": "report.profiles",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'vitcls_utils' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))
