"""vitcls_utils: load the paper's ViT variants, hook them, project tokens onto class space, and
reduce whole datasets to compact per-token metrics.

Attributes are imported lazily so that ``import vitcls_utils`` (done at every interpreter start
of the project's venv by the torchvision shim) stays cheap. No export shares its name with a
submodule: once ``vitcls_utils.hooks`` is imported, ``vitcls_utils.hooks`` *is* that module, so
the context manager is ``vitcls_utils.hooks.hooks`` and extraction ``vitcls_utils.extract.extract``.
"""
from __future__ import annotations

import importlib
from typing import Any

from . import _compat

_compat.install_import_hook()

__version__ = "0.1.0"

_EXPORTS = {
    "VitclsError": "errors",
    "UnknownVariantError": "errors",
    "WeightsError": "errors",
    "DatasetError": "errors",
    "StoreError": "errors",
    "IncompleteStoreError": "errors",
    "DamagedStoreError": "errors",
    "Variant": "variants",
    "VARIANTS": "variants",
    "get_variant": "variants",
    "list_variants": "variants",
    "load_variant": "variants",
    "Preprocess": "preprocess",
    "capture": "hooks",
    "run_with_cache": "hooks",
    "site_names": "hooks",
    "ClassProjector": "projection",
    "rank_of_true_class": "projection",
    "ImageFolderDataset": "data",
    "open_store": "store_reader",
    "store_for": "extract",
    "find_stores": "store_reader",
    "evaluate": "extract",
    "Store": "store_reader",
    "get_profile": "profiles",
    "Profile": "profiles",
    "AttentionPerturbation": "perturb",
    "TokenRemoval": "perturb",
    "ToyDataset": "data",
    "ImageNetSDataset": "data",
    "Cifar100Dataset": "data",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'vitcls_utils' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))
