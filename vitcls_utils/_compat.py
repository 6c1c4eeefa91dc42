"""Environment quirks handled in one place: a torchvision whose compiled ops do not load, and
offline machines asked for pretrained weights.

This module imports only the standard library at import time, because a ``.pth`` file imports
it at every interpreter start of the project's virtual environment (see :func:`install_pth`).
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import socket
import sys
import sysconfig
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

PTH_NAME = "vitcls_torchvision_shim.pth"
_PTH_LINE = (
    "import sys; exec('try:\\n import vitcls_utils._compat as c; c.install_import_hook()\\n"
    "except Exception:\\n pass')\n"
)

_state = {"checked": False, "shimmed": False, "library": None}


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
    if _state["checked"]:
        return bool(_state["shimmed"])
    _state["checked"] = True
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
    _state["library"] = library  # the schemas live as long as this object
    _state["shimmed"] = True
    return True


class _TorchvisionFirstImport(importlib.abc.MetaPathFinder):
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
    if not any(isinstance(f, _TorchvisionFirstImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionFirstImport())


def install_pth(site_dir: Optional[str] = None) -> Path:
    """Write the ``.pth`` file that installs the import hook in every interpreter of this env.

    Jupyter kernels started by papermill, nbval and jupyter-book then import timm without
    importing ``vitcls_utils`` first. The hook costs nothing until torchvision is imported.
    """
    target = Path(site_dir or sysconfig.get_paths()["purelib"]) / PTH_NAME
    target.write_text(_PTH_LINE)
    return target


# ----------------------------------------------------------------------------------------------
# Network: fail fast instead of retrying for a minute on a machine without internet.
# ----------------------------------------------------------------------------------------------
def host_reachable(url: str, timeout: float = 1.0) -> bool:
    """True when a TCP connection to the URL's host opens within ``timeout`` seconds."""
    parsed = urlparse(url)
    host = parsed.hostname
    if not host:
        return False
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_offline() -> bool:
    """True when the user asked Hugging Face Hub to stay offline (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_endpoint() -> str:
    """The Hugging Face endpoint timm downloads from."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


if __name__ == "__main__":
    if "--install-pth" in sys.argv[1:]:
        print(f"installed {install_pth()}")
    else:
        print("usage: python -m vitcls_utils._compat --install-pth", file=sys.stderr)
        sys.exit(2)
