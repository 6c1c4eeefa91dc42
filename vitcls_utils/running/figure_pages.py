"""The book's figure pages: one page per paper figure or table, holding every run of it.

Each notebook of ``notebooks/`` runs once per variant and profile into
``book/runs/<folder>/<name>.ipynb``. A reader compares variants on one page, so the book's
chapters list one page per figure, ``book/figures/<name>.md``, written here from the executed
runs: the figure's introduction (the notebook's first paragraph), the runs side by side (their
headline numbers with the paper's reported values in one table, and each run's first figure
as a small multiple), then one tab per run with everything its page shows. The executed
notebooks themselves stay in the book, under "Executed notebooks", linked from each tab.

The pages are a pure function of the executed notebooks: nothing is re-run, and a page is
rewritten only when its text changes, so an incremental book build re-reads only what moved.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..base import paths
from ..model.registry import get_variant, list_variants
from ..report.profiles import DEFAULT_PROFILE, get_profile

RUNS = paths.ROOT / "book" / "runs"
FIGURES = paths.ROOT / "book" / "figures"
NOTEBOOKS = paths.ROOT / "notebooks"
#: glued values live under this mime prefix in an executed notebook (myst-nb under papermill)
GLUE = "application/papermill.record/"
SUMMARY_KEY = "summary"
#: figures whose page sets no number beside a reported one, and why (the page says so)
WITHOUT_NUMBERS = {
    "tabA6b_value_vectors": "the paper reads single value vectors in words (appendix A6b); "
                            "each tab lists its reading beside this run's where it gives one",
    "compare_variants": "this page is itself the comparison: its table sets each variant "
                        "beside the value reported for it",
    "compare_memories": "this page compares the variants' memories with each other",
}
_ROLE = re.compile(r"\{glue(?::(text|md|any))?\}`([^`<]+?)(?::([^`]*))?`")


@dataclass(frozen=True)
class Run:
    """One executed notebook: where it is and whose run it is."""

    path: Path
    folder: str
    variant: Optional[str]
    profile: str

    @property
    def label(self) -> str:
        """The tab's name: the variant's paper name, and the settings when not the default."""
        base = "all variants" if self.variant is None else get_variant(self.variant).label
        if self.profile == DEFAULT_PROFILE:
            return base
        return f"{base}, {get_profile(self.profile).title}"

    @property
    def anchor(self) -> str:
        """A stable id for the run on its figure page."""
        return re.sub(r"[^a-z0-9]+", "-", f"{self.folder}".lower()).strip("-")


def read_run(path: Path) -> Run:
    """The :class:`Run` of an executed notebook, from the parameters the runner recorded."""
    meta = json.loads(path.read_text())["metadata"].get("vitcls", {})
    parameters = meta.get("parameters", {})
    return Run(path, path.parent.name, parameters.get("variant"),
               get_profile(parameters.get("profile")).name)


def runs_of(name: str, runs_dir: Path = RUNS) -> List[Run]:
    """Every finished run of notebook ``name``: paper variants first in the registry's order,
    each variant's default profile before the authors' settings, comparisons last."""
    order = {v.key: i for i, v in enumerate(list_variants())}
    runs = []
    for path in sorted(runs_dir.glob(f"*/{name}.ipynb")):
        meta = json.loads(path.read_text())["metadata"].get("vitcls", {})
        if meta.get("status") == "ok":
            runs.append(read_run(path))
    return sorted(runs, key=lambda r: (r.variant is None, order.get(r.variant or "", 1 << 20),
                                       r.profile != DEFAULT_PROFILE, r.folder))


# ----------------------------------------------------------------------------------------------
# Reading an executed notebook
# ----------------------------------------------------------------------------------------------
def glued(notebook: dict) -> Dict[str, Dict[str, object]]:
    """{glue key: {mime type: value}} of every value the notebook glued."""
    values = {}
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            scrap = output.get("metadata", {}).get("scrapbook")
            if scrap:
                values[scrap["name"]] = {mime[len(GLUE):]: data for mime, data in
                                         output.get("data", {}).items() if mime.startswith(GLUE)}
    return values


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def paste(markdown: str, values: Dict[str, Dict[str, object]]) -> str:
    """``markdown`` with its ``{glue:text}`key:format``` and ``{glue:md}`key``` roles replaced
    by the glued values, formatted as myst-nb would."""
    def value_of(match: re.Match) -> str:
        kind, key, spec = match.group(1), match.group(2).strip(), match.group(3)
        bundle = values.get(key)
        if bundle is None:
            return "(missing)"
        if kind == "md" and "text/markdown" in bundle:
            return _text(bundle["text/markdown"]).strip()
        plain = _text(bundle.get("text/plain", "")).strip().strip("'\"")
        if spec:
            try:
                return format(float(plain), spec)
            except ValueError:
                return plain
        return plain
    return _ROLE.sub(value_of, markdown)


def summary_of(notebook: dict) -> List[dict]:
    """The rows the notebook glued as its ``summary`` (metric, this run, reported, ...), or
    [] when it glued none."""
    text = _text(glued(notebook).get(SUMMARY_KEY, {}).get("text/plain", ""))
    try:
        rows = json.loads(text) if text else []
    except ValueError:
        return []
    return rows if isinstance(rows, list) else []


# ----------------------------------------------------------------------------------------------
# Writing a figure page
# ----------------------------------------------------------------------------------------------
def _image(data: str, folder: Path, stem: str) -> str:
    """Save a base64 PNG under ``folder`` (named by its content) and return its file name."""
    raw = base64.b64decode(data)
    name = f"{stem}-{hashlib.sha256(raw).hexdigest()[:12]}.png"
    target = folder / name
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        target.write_bytes(raw)
    return name


def _demote(markdown: str) -> str:
    """Headings inside a tab become bold lines (the page's own outline stays the figure's)."""
    return re.sub(r"^#{1,6}\s+(.*)$", r"**\1**", markdown, flags=re.M)


def _fence(text: str, language: str = "text", fence: str = "```") -> str:
    """``text`` in a fenced block (``{raw} html`` for an output's HTML, which Markdown would
    otherwise end at its first blank line), the fence longer than any run of backticks in it."""
    while fence in text:
        fence += "`"
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def run_body(run: Run, images: Path, prefix: str, caption: str) -> str:
    """A run's tab: its settings line, every output its page shows (figures with numbered
    captions, tables, printed numbers), its sentences, and a link to the executed notebook."""
    notebook = json.loads(run.path.read_text())
    values = glued(notebook)
    parts: List[str] = []
    figures = 0
    for index, cell in enumerate(notebook["cells"]):
        tags = cell.get("metadata", {}).get("tags", [])
        if "remove-cell" in tags or "remove-output" in tags:
            continue
        if cell["cell_type"] == "markdown":
            text = paste(_text(cell["source"]), values)
            if index == 0:  # the title, settings and rerun lines; the intro is on the page
                text = "\n\n".join(p for p in text.split("\n\n")
                                   if p.startswith(("**Settings:**", "**Rerun")))
            if text.strip():
                parts.append(_demote(text))
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if output["output_type"] == "stream" and output.get("name") == "stdout":
                parts.append(_fence(_text(output["text"])))
            elif "image/png" in data:
                figures += 1
                name = _image(_text(data["image/png"]).replace("\n", ""), images,
                              f"{run.anchor}-{figures}")
                parts.append(f":::{{figure}} {prefix}/{name}\n:width: 100%\n\n"
                             f"{caption}, {run.label}"
                             f"{f' ({figures})' if figures > 1 else ''}.\n:::")
            elif "text/html" in data:
                parts.append(_fence(_text(data["text/html"]).strip(), "{raw} html"))
            elif "text/markdown" in data:
                parts.append(_demote(_text(data["text/markdown"])))
    link = f"../runs/{run.folder}/{run.path.stem}"
    parts.append(f"[The executed notebook, with its code]({link}.ipynb)")
    return "\n\n".join(parts)


def _intro(source: dict) -> tuple:
    """(title, introduction) of a source notebook: its first heading and the paragraphs
    after it, without the Colab line."""
    first = _text(source["cells"][0]["source"])
    lines = first.splitlines()
    title = next((line[2:].strip() for line in lines if line.startswith("# ")), "Figure")
    paragraphs = [p for p in "\n".join(l for l in lines if not l.startswith("# ")).split("\n\n")
                  if p.strip() and "colab.research.google.com" not in p]
    return title, "\n\n".join(p.strip() for p in paragraphs)


def _cell(value) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|")


def summary_table(runs: Sequence[Run]) -> str:
    """The runs' headline numbers in one table, the paper's reported value beside each (a
    Markdown table; empty when no run glued a summary)."""
    rows = []
    for run in runs:
        for row in summary_of(json.loads(run.path.read_text())):
            reported = row.get("reported")
            model = row.get("reported_model") or ""
            rows.append([row.get("metric", ""), run.label, _cell(row.get("value")),
                         f"{_cell(reported)} ({model})" if reported is not None and model
                         else _cell(reported), row.get("agreement", "")])
    if not rows:
        return ""
    header = ["metric", "run", "this run", "reported", "agreement"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def small_multiples(runs: Sequence[Run], images: Path, prefix: str) -> str:
    """Each run's first figure side by side (a grid of cards, two per row on a wide screen,
    one on a phone), each linking to its executed notebook."""
    cards = []
    for run in runs:
        notebook = json.loads(run.path.read_text())
        png = next((_text(o["data"]["image/png"]) for c in notebook["cells"]
                    if "remove-cell" not in c.get("metadata", {}).get("tags", [])
                    for o in c.get("outputs", []) if "image/png" in o.get("data", {})), None)
        if png is None:
            continue
        name = _image(png.replace("\n", ""), images, f"{run.anchor}-1")
        cards.append(f":::{{grid-item-card}} {run.label}\n"
                     f":link: ../runs/{run.folder}/{run.path.stem}\n:link-type: doc\n\n"
                     f"```{{image}} {prefix}/{name}\n:width: 100%\n"
                     f":alt: {run.label}\n```\n:::")
    if len(cards) < 2:
        return ""
    return "::::{grid} 1 1 2 2\n:gutter: 2\n\n" + "\n\n".join(cards) + "\n::::"


def figure_page(name: str, runs: Sequence[Run], figures_dir: Path = FIGURES,
                notebooks_dir: Path = NOTEBOOKS) -> str:
    """The Markdown of notebook ``name``'s figure page.

    Args:
        name: the notebook's stem (``tab1_identifiability_rate``).
        runs: its runs (:func:`runs_of`), in the order the tabs take.
        figures_dir: the pages' folder; images go to ``_images/<name>/`` under it.
        notebooks_dir: where the source notebook is (its title and introduction).

    Returns:
        The page's MyST Markdown.
    """
    title, intro = _intro(json.loads((notebooks_dir / f"{name}.ipynb").read_text()))
    images, prefix = figures_dir / "_images" / name, f"_images/{name}"
    parts = [f"(figure-{name.replace('_', '-')})=", f"# {title}", intro]
    if not runs:
        parts.append(f"No run of this figure yet: `vitcls run --variants toy --notebooks "
                     f"{name}` runs it on the toy model, and the page fills on the next "
                     "build.")
        return "\n\n".join(parts) + "\n"
    table, grid = summary_table(runs), small_multiples(runs, images, prefix)
    if not table and name in WITHOUT_NUMBERS:
        table = f"The paper prints no number for this figure to set these runs beside: " \
                f"{WITHOUT_NUMBERS[name]}."
    elif table and not any(row.get("reported") is not None for run in runs
                           for row in summary_of(json.loads(run.path.read_text()))):
        table += "\n\nThe paper prints no number of this figure for these models or any like them."
    if table or grid:
        parts += ["## Across the runs", table, grid]
    parts.append("## Each run")
    tabs = []
    for run in runs:
        body = run_body(run, images, prefix, title)
        tabs.append(f"::::{{tab-item}} {run.label}\n:sync: {run.anchor}\n\n"
                    f"(run-{run.anchor}-{name.replace('_', '-')})=\n{body}\n::::")
    parts.append(":::::{tab-set}\n\n" + "\n\n".join(tabs) + "\n:::::")
    return "\n\n".join(p for p in parts if p) + "\n"


def runs_index(runs_dir: Path = RUNS) -> str:
    """The "Executed notebooks" page: every run folder with links to its notebooks."""
    parts = ["# Executed notebooks",
             "Every notebook as it ran, with its code, one folder per variant and settings "
             "profile. The chapters show them side by side on each figure's page."]
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        notebooks = sorted(nb for nb in folder.glob("*.ipynb")  # not a run's leftovers
                           if not nb.name.startswith(".") and not nb.stem.endswith(".failed"))
        if not notebooks:
            continue
        run = read_run(notebooks[0])
        parts.append(f"## {run.label}")
        parts.append("\n".join(f"- [{nb.stem}]({folder.name}/{nb.stem}.ipynb)"
                               for nb in notebooks))
    return "\n\n".join(parts) + "\n"


def _write(path: Path, text: str) -> bool:
    """Write ``text`` unless the file already holds it (keeps mtimes for incremental builds)."""
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def write_pages(runs_dir: Path = RUNS, figures_dir: Path = FIGURES,
                notebooks_dir: Path = NOTEBOOKS) -> List[Path]:
    """Write every figure page and the runs' index from what has run.

    Args:
        runs_dir: the executed runs (``book/runs``).
        figures_dir: where the figure pages go (``book/figures``).
        notebooks_dir: the source notebooks: one page each, with or without runs.

    Returns:
        The pages whose text changed.
    """
    changed = []
    runs_dir.mkdir(parents=True, exist_ok=True)
    for source in sorted(notebooks_dir.glob("*.ipynb")):
        page = figures_dir / f"{source.stem}.md"
        if _write(page, figure_page(source.stem, runs_of(source.stem, runs_dir), figures_dir,
                                    notebooks_dir)):
            changed.append(page)
    index = runs_dir / "index.md"
    if _write(index, runs_index(runs_dir)):
        changed.append(index)
    return changed
