"""Compare the outputs of two executed-run folders (``book/runs/`` trees): every cell's outputs,
text and images, notebook by notebook. Used to show that a change of the runner (warm kernels,
parallel jobs) leaves every number and figure of the book as it was.

    python benchmarks/compare_runs.py RUNS_A RUNS_B [--text]

``--text`` compares the text outputs only (numbers, tables, printed lines), not the figures.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path


#: pandas' Styler names each table with a random id, and an object's repr shows its address:
#: neither is part of the result
STYLER_ID = re.compile(r"T_[0-9a-f]{5}")
ADDRESS = re.compile(r" at 0x[0-9a-f]+>")


def text(value) -> str:
    value = "".join(value) if isinstance(value, list) else json.dumps(value, sort_keys=True)
    return ADDRESS.sub(" at 0x?>", STYLER_ID.sub("T_<id>", value))


def outputs(path: Path, text_only: bool = False) -> list:
    """Each code cell's outputs (text, and a hash of each image), with the Styler's random
    table ids and the execution counts left out."""
    cells = json.loads(path.read_text())["cells"]
    found = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        for out in cell.get("outputs", []):
            out = {k: v for k, v in out.items() if k not in ("execution_count",)}
            if "text" in out:
                out["text"] = text(out["text"])
            data = out.get("data", {})
            out["data"] = {k: hashlib.sha256(text(v).encode()).hexdigest()[:12]
                           for k, v in data.items()
                           if not (text_only and k.startswith("image/"))}
            found.append(json.dumps(out, sort_keys=True))
    return found


def main(a: str, b: str, text_only: bool = False) -> int:
    left, right = Path(a), Path(b)
    names = sorted({p.relative_to(left) for p in left.rglob("*.ipynb")}
                   | {p.relative_to(right) for p in right.rglob("*.ipynb")})
    differ = 0
    for name in names:
        if not (left / name).is_file() or not (right / name).is_file():
            print(f"only in one: {name}")
            differ += 1
            continue
        x, y = outputs(left / name, text_only), outputs(right / name, text_only)
        if x != y:
            differ += 1
            bad = sum(p != q for p, q in zip(x, y)) + abs(len(x) - len(y))
            print(f"differs: {name} ({bad} of {max(len(x), len(y))} outputs)")
    print(f"{len(names)} notebooks, {len(names) - differ} identical, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], "--text" in sys.argv[3:]))
