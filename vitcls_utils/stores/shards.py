"""Shards of one store: which rows each of n extraction processes fills, and where each records
its progress, so that n processes (on several GPUs, or as a SLURM job array) write one store
identical to a single process's.

Shard boundaries fall on the store's batch boundaries, so every image is forwarded in the same
batch, with the same neighbours, as an unsharded run would forward it: the arrays agree to the
bit. Shard ``i`` of ``n`` (0-based) records its progress in ``progress.shard-<i>-of-<n>.json``
and holds its own lock; the store's lock is held only to create the store and to finish it,
which the last shard to end does.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Tuple

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


def shards_done(path: Path, n_images: int, unit: int, count: int) -> bool:
    """Whether every shard of a store split ``count`` ways has written all its rows."""
    import json

    for index in range(count):
        _, stop = shard_rows(n_images, unit, (index, count))
        file = progress_file(path, (index, count))
        try:
            done = json.loads(file.read_text()).get("done")
        except (OSError, ValueError):
            return False
        if done != stop:
            return False
    return True
