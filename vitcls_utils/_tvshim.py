"""The torchvision shim, standard library only and importable on its own: the project's
``.pth`` file runs a copy of this file (installed beside it in site-packages as
``vitcls_tvshim.py``) at every interpreter start, so that it never imports ``vitcls_utils`` and
never ties the interpreter to one checkout of it. See ``vitcls_utils._compat.install_pth``.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

shim_state = {"checked": False, "shimmed": False, "library": None}


def ensure_torchvision_ops() -> bool:
    """Make ``import torchvision`` work when its compiled ops cannot be loaded.

    A CUDA build of torchvision beside a CPU build of torch fails at import with "operator
    torchvision::nms does not exist" (pytorch/vision#9085): torchvision registers fake kernels
    for ``nms`` and ``qnms`` whether or not its ``_C`` library loaded. When ``_C`` loads, this
    does nothing; when it does not, it declares those two schemas so the import succeeds
    (detection ops then raise if called, which no analysis here does).

    Returns:
        True when the schemas had to be declared, False when torchvision needs no help.
    """
    if shim_state["checked"]:
        return bool(shim_state["shimmed"])
    shim_state["checked"] = True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    import torch

    lib_path = None
    for location in spec.submodule_search_locations:
        for candidate in Path(location).glob("_C*.so"):
            lib_path = candidate
    if lib_path is not None:
        try:
            torch.ops.load_library(str(lib_path))
            return False
        except (OSError, RuntimeError):
            pass
    if hasattr(torch.ops.torchvision, "nms"):  # declared by somebody else already
        return False
    library = torch.library.Library("torchvision", "DEF")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    shim_state["library"] = library  # the schemas live as long as this object
    shim_state["shimmed"] = True
    return True


class TorchvisionFirstImport(importlib.abc.MetaPathFinder):
    """Runs :func:`ensure_torchvision_ops` just before the first ``import torchvision``."""

    def find_spec(self, fullname, path, target=None):  # noqa: D102 (importlib protocol)
        if fullname == "torchvision":
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            try:
                ensure_torchvision_ops()
            except Exception:  # never break an import because of the shim itself
                pass
        return None


def install_import_hook() -> None:
    """Arrange for the torchvision shim to run lazily, on the first torchvision import."""
    if "torchvision" in sys.modules:
        return
    if not any(isinstance(f, TorchvisionFirstImport) for f in sys.meta_path):
        sys.meta_path.insert(0, TorchvisionFirstImport())
