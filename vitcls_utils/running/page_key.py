"""A book page's key: what its output depends on, so that ``vitcls run`` skips a page only
when running it again would give the same page.

The key covers the notebook's source, its parameters, the package's source code (every module
of ``vitcls_utils``: a change anywhere in the code that computes a page runs it again, which is
safe and, as pages are few, cheap), the contents of the stimuli it reads (the dataset's content
identity, :meth:`~vitcls_utils.datasets.interface.ImageDataset.content_id`: an image added,
removed or rewritten in place changes it), and the bytes of the weights files it names (a
checkpoint replaced at the same path changes it); a comparison page's key covers the stores it
reads instead. Files are hashed only when their stamp (size, mtime, inode, ctime) changed since
they were last hashed (:func:`~vitcls_utils.datasets.interface.content_digests`), so a key costs
a ``stat`` per file; the hashes of large files are kept between processes beside the stimulus
caches.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, Optional

from ..base.errors import VitclsError
from ..datasets.interface import content_digests
from ..stores import stimulus_cache

PACKAGE = Path(__file__).resolve().parents[1]


def page_key(notebook: Path, parameters: Dict[str, object], variant: Optional[str]) -> str:
    """The key of one page: 16 hex digits of a SHA-256 over everything it depends on.

    Args:
        notebook: the source notebook.
        parameters: the parameters it runs with.
        variant: the variant it runs for (None: a comparison of the stores in its results).

    Returns:
        The key, written into the page when it is made and compared on the next run.
    """
    return combined(key_parts(notebook, parameters, variant))


def key_parts(notebook: Path, parameters: Dict[str, object], variant: Optional[str]
              ) -> Dict[str, str]:
    """What a page's key is made of, one digest per input, named as a reader would name it: a
    page that runs again says which of them changed (:func:`changed_parts`).

    Args:
        notebook, parameters, variant: as :func:`page_key`.

    Returns:
        {input name: its digest}: notebook, parameters, package source, and the stimuli and
        weights (a variant's page) or the stores it compares (a comparison page).
    """
    parts = {"notebook": hashlib.sha256(notebook.read_bytes()).hexdigest(),
             "parameters": hashlib.sha256(json.dumps(parameters, sort_keys=True,
                                                     default=str).encode()).hexdigest(),
             "package source": source_digest()}
    results = Path(str(parameters.get("results_dir") or "results"))
    if variant is None:
        parts["stores"] = stores_digest(results)
    else:
        parts["stimuli"] = str(data_identity(notebook, parameters, variant, results))
        parts["weights"] = weights_digest(parameters, variant, results)
    return parts


def combined(parts: Dict[str, str]) -> str:
    """The key of a page from its parts (:func:`key_parts`)."""
    digest = hashlib.sha256()
    for name in sorted(parts):
        digest.update(f"{name}\t{parts[name]}\n".encode())
    return digest.hexdigest()[:16]


def stale_page(page: Path, parts: Dict[str, str]) -> Optional[str]:
    """Why the page at ``page`` must be made again for inputs ``parts``, in a few words (the
    run's log line), or None when it is up to date.

    Args:
        page: the executed notebook, which records the key and parts it was made with.
        parts: this run's :func:`key_parts`.

    Returns:
        ``no page yet``, ``its last run failed``, ``changed: weights``, ..., or None.
    """
    if not page.is_file():
        return "no page yet"
    try:
        meta = json.loads(page.read_text())["metadata"].get("vitcls", {})
    except (ValueError, KeyError, AttributeError):
        return "the page is unreadable"
    if meta.get("status") != "ok":
        return "its last run failed"
    if meta.get("key") == combined(parts):
        return None
    return "changed: " + changed_parts(meta.get("key_parts") or {}, parts)


def changed_parts(before: Dict[str, str], now: Dict[str, str]) -> str:
    """The inputs whose digests differ, for the line that says why a page runs again.

    Args:
        before: the parts recorded in the page (may be empty: a page from an older version).
        now: the parts of this run.

    Returns:
        ``"package source, weights"``, or ``"an older page format"`` when none was recorded.
    """
    if not before:
        return "an older page format"
    return ", ".join(name for name in now if before.get(name) != now[name]) or "its key"


def source_digest(package: Optional[Path] = None) -> str:
    """SHA-256 over every module of the package (default: this one), by relative path."""
    package = package or PACKAGE
    modules = sorted(package.rglob("*.py"))
    digest = hashlib.sha256()
    for module, sha in zip(modules, content_digests(modules), strict=True):
        digest.update(f"{module.relative_to(package).as_posix()}\t{sha}\n".encode())
    return digest.hexdigest()


def data_identity(notebook: Path, parameters: Dict[str, object], variant: str,
                  results: Path) -> Optional[str]:
    """The content identity of the stimuli the page selects (its ``n_per_class``, else the
    notebook's default); None for generated stimuli, and the reason for data that cannot be
    read (the page then fails, and is not skipped once it can be)."""
    from ..datasets.kinds import build_dataset
    from ..model.registry import get_variant
    from .colab import default_parameters

    kind = str(parameters.get("dataset") or "toy")
    if kind == "toy":
        return None
    n_per_class = parameters.get("n_per_class", default_parameters(notebook).get("n_per_class"))
    n_per_class = n_per_class if isinstance(n_per_class, int) else None
    try:
        dataset = build_dataset(kind, parameters.get("data_dir"),
                                num_classes=get_variant(variant).classes,
                                n_per_class=n_per_class)
    except VitclsError as error:
        return f"unreadable: {error}"
    return stimulus_cache.use(dataset, results).content_id()


def weights_digest(parameters: Dict[str, object], variant: str, results: Path) -> str:
    """The SHA-256 of each weights file the page reads: every ``*weights`` parameter naming a
    file, and the variant's shipped checkpoint when it runs on that."""
    from ..model.registry import data_dir, get_variant

    files = [Path(str(value)) for name, value in sorted(parameters.items())
             if name.endswith("weights") and isinstance(value, str) and Path(value).is_file()]
    spec = get_variant(variant)
    if not parameters.get("weights") and spec.weights == "shipped" and spec.weights_url:
        files.append(data_dir() / spec.weights_url)
    index = stimulus_cache.folder_for(results) / "files-weights.json"
    return ",".join(content_digests(files, index))


def stores_digest(results: Path) -> str:
    """SHA-256 over the manifests of the stores in ``results``: a comparison page reads them,
    and a store made again has a new manifest (its completion time and checksums)."""
    manifests = sorted(results.glob("*/*/manifest.json"))
    digest = hashlib.sha256()
    for manifest, sha in zip(manifests, content_digests(manifests), strict=True):
        digest.update(f"{manifest.relative_to(results).as_posix()}\t{sha}\n".encode())
    return digest.hexdigest()
