"""Where the repository and its shipped data are: found from this file, so that an editable
install, a copied checkout and Colab's clone all read their own ``data/`` and ``notebooks/``."""
from __future__ import annotations

import os
from pathlib import Path

#: the repository (or installed tree) root: the folder holding ``vitcls_utils/``
ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The shipped data folder (``data/``), or ``$VITCLS_DATA`` where it is set."""
    return Path(os.environ.get("VITCLS_DATA", ROOT / "data"))
