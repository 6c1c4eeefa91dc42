"""Progress bars: one convention for every long pass (images counted, not batches), and off
when asked or under ``TQDM_DISABLE`` (CI, the book build)."""
from __future__ import annotations

import os


def quiet(progress: bool) -> bool:
    """No progress bar when asked, or when TQDM_DISABLE is set (CI, the book build)."""
    return not progress or os.environ.get("TQDM_DISABLE", "").lower() in {"1", "true", "yes"}


def with_progress(loader, total: int, desc: str, progress: bool = True):
    """Yield the loader's batches under a progress bar that counts images (the one convention
    of every command), not batches."""
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="img", desc=desc, disable=quiet(progress)) as bar:
        for batch in loader:
            yield batch
            bar.update(len(batch["label"]))
