"""Shards of one store: which rows each of n extraction processes fills, and where each records
its progress, so that n processes (on several GPUs, or as a SLURM job array) write one store
identical to a single process's.

Shard boundaries fall on the store's batch boundaries, so every image is forwarded in the same
batch, with the same neighbours, as an unsharded run would forward it: the arrays agree to the
bit. Shard ``i`` of ``n`` (0-based) records its progress in ``progress.shard-<i>-of-<n>.json``
and holds its own lock; the store's lock is held only to create the store and to finish it,
which the last shard to end does.

Shards run with different settings (other images, ``--n-per-class``, ``--kinds``, weights)
have different configurations and so fill different stores, each missing the others' rows:
:func:`disagreement` finds such a sibling and names what differs, so that the shard says so
instead of leaving a store that waits forever.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..base.errors import VitclsError

Shard = Tuple[int, int]


def parse_shard(text: str) -> Shard:
    """``"i/n"`` (0-based i < n) -> (i, n), or an error that shows the form."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise VitclsError(f"--shard takes i/n with 0 <= i < n (e.g. 0/4), not {text!r}")
    return check_shard((int(match.group(1)), int(match.group(2))))


def check_shard(shard: Shard) -> Shard:
    """``shard`` as (i, n) with 0 <= i < n, else an error."""
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise VitclsError(f"a shard is (i, n), not {shard!r}") from None
    if count < 1 or not 0 <= index < count:
        raise VitclsError(f"shard {index}/{count}: need n >= 1 and 0 <= i < n")
    return index, count


def shard_rows(n_images: int, unit: int, shard: Shard) -> Tuple[int, int]:
    """[start, stop) of the rows of ``shard``: whole units (batches) of ``unit`` images dealt
    out as evenly as they go, the last unit possibly short."""
    index, count = check_shard(shard)
    units = -(-n_images // unit)
    first, last = index * units // count, (index + 1) * units // count
    return min(first * unit, n_images), min(last * unit, n_images)


def progress_file(path: Path, shard: Optional[Shard]) -> Path:
    """The progress file of a store, or of one of its shards."""
    if shard is None:
        return path / "progress.json"
    return path / f"progress.shard-{shard[0]}-of-{shard[1]}.json"


def lock_suffix(shard: Shard) -> str:
    return f"shard-{shard[0]}-of-{shard[1]}"


def missing_shards(path: Path, n_images: int, unit: int, count: int) -> List[int]:
    """The shards of a store split ``count`` ways that have not written all their rows."""
    missing = []
    for index in range(count):
        _, stop = shard_rows(n_images, unit, (index, count))
        try:
            done = json.loads(progress_file(path, (index, count)).read_text()).get("done")
        except (OSError, ValueError, AttributeError):
            done = None
        if done != stop:
            missing.append(index)
    return missing


def disagreement(path: Path, config: dict, count: int, missing: List[int]) -> Optional[str]:
    """How a sibling store, split the same ``count`` ways and holding rows of a shard that
    this store is ``missing``, was configured otherwise; None when there is none."""
    for other in sorted(path.parent.glob("*/manifest.json")):
        try:
            manifest = json.loads(other.read_text())
            theirs = manifest["config"] if manifest.get("shards") == count else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        ran = [i for i in missing if progress_file(other.parent, (i, count)).exists()]
        if other.parent == path or theirs is None or not ran:
            continue
        differs = "; ".join(f"{key}: {_short(mine)} here, {_short(their)} there"
                            for key, (mine, their) in _differences(config, theirs).items())
        return (f"shard {ran[0]}/{count} was run with other settings, into "
                f"{other.parent.name} ({differs}): rerun it with this shard's settings")
    return None


def _differences(mine: dict, theirs: dict, prefix: str = "") -> Dict[str, tuple]:
    """Dotted keys whose values differ between two configurations, with both values."""
    found: Dict[str, tuple] = {}
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found.update(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            found[prefix + key] = (a, b)
    return found


def _short(value: object) -> str:
    text = repr(value)
    return text[:14] + "...'" if isinstance(value, str) and len(value) > 24 else text
