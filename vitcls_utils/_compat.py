"""Environment quirks handled in one place: a torchvision whose compiled ops do not load (the
shim itself is :mod:`vitcls_utils._tvshim`, installed for every interpreter by
:func:`install_pth`), and offline machines asked for pretrained weights.

This module imports only the standard library at import time: ``import vitcls_utils`` stays
cheap.
"""
from __future__ import annotations

import os
import socket
import sys
import sysconfig
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

PTH_NAME = "vitcls_torchvision_shim.pth"
SHIM_MODULE = "vitcls_tvshim"  # the copy of ._tvshim that the .pth file imports
_PTH_LINE = (
    f"import sys; exec('try:\\n import {SHIM_MODULE}; {SHIM_MODULE}.install_import_hook()\\n"
    "except Exception:\\n pass')\n"
)

from ._tvshim import (TorchvisionFirstImport, ensure_torchvision_ops,  # noqa: F401,E402
                      install_import_hook, shim_state)


def install_pth(site_dir: Optional[str] = None) -> Path:
    """Write the ``.pth`` file that installs the import hook in every interpreter of this env,
    and beside it the standalone copy of :mod:`vitcls_utils._tvshim` that it imports.

    Jupyter kernels started by papermill, nbval and jupyter-book then import timm without
    importing ``vitcls_utils`` first. The hook costs nothing until torchvision is imported, and
    no interpreter imports ``vitcls_utils`` because of it (a copied project imports its own).
    """
    folder = Path(site_dir or sysconfig.get_paths()["purelib"])
    (folder / f"{SHIM_MODULE}.py").write_text((Path(__file__).parent / "_tvshim.py").read_text())
    target = folder / PTH_NAME
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
