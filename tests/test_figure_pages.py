"""The figure pages: one page per notebook with every run of it, written from the executed
notebooks alone: glued values pasted into the prose, figures saved with numbered captions,
the runs' summaries in one table beside the reported values, and nothing rewritten when
nothing changed."""
from __future__ import annotations

import base64
import json

import pytest

from vitcls_utils.running import figure_pages as pages

PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf0000020101000518d84e0000000049454e44ae426082"
)).decode()
GLUE = "application/papermill.record/"


def glued(name, plain=None, markdown=None):
    data = {}
    if plain is not None:
        data[GLUE + "text/plain"] = plain
    if markdown is not None:
        data[GLUE + "text/markdown"] = markdown
    return {"output_type": "display_data", "data": data,
            "metadata": {"scrapbook": {"name": name, "mime_prefix": GLUE}}}


def executed(variant, profile="corrected", summary=None, status="ok"):
    """An executed run as the runner writes it."""
    outputs = [glued("rate", "96.2755"), glued("sentence", markdown="the *toy* is small"),
               {"output_type": "display_data", "data": {"image/png": PNG,
                                                         "text/plain": "<Figure>"},
                "metadata": {}},
               {"output_type": "execute_result", "data": {"text/html": "<table>t</table>",
                                                          "text/plain": "t"},
                "metadata": {}, "execution_count": 1}]
    if summary is not None:
        outputs.append(glued("summary", json.dumps(summary)))
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source":
         "# Table 1: Toy\n\n**Settings:** corrected.\n\n**Rerun this page:** [x](y)\n\nintro"},
        {"cell_type": "code", "metadata": {"tags": ["parameters", "remove-cell"]},
         "source": "variant = 'toy'", "outputs": [], "execution_count": None},
        {"cell_type": "code", "metadata": {"tags": ["hide-input"]}, "source": "...",
         "outputs": outputs, "execution_count": 1},
        {"cell_type": "code", "metadata": {"tags": ["hide-input"]}, "source": "print()",
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "rate 96.28%\n"}],
         "execution_count": 2},
        {"cell_type": "markdown", "metadata": {}, "source":
         "## Reading\n\n**This run.** {glue:text}`rate:.1f`% and {glue:md}`sentence`."},
    ]
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"vitcls": {"status": status, "parameters": {
                "variant": variant, "profile": profile}}}}


@pytest.fixture
def book(tmp_path):
    runs, figures, sources = tmp_path / "runs", tmp_path / "figures", tmp_path / "notebooks"
    sources.mkdir()
    (sources / "tab1_x.ipynb").write_text(json.dumps({"cells": [{
        "cell_type": "markdown", "metadata": {}, "source":
        "# Table 1: identifiability rate\n\n[Open in Colab](https://colab.research.google.com/"
        "x)\n\nThe share of image tokens."}]}))
    (sources / "fig9_none.ipynb").write_text(json.dumps({"cells": [{
        "cell_type": "markdown", "metadata": {}, "source": "# Figure 9: unrun\n\nText."}]}))
    summary = [{"metric": "identifiability rate (%)", "value": 96.28, "reported": 60.73,
                "reported_model": "ViT-B/32", "agreement": "not comparable: toy"}]
    for folder, variant, profile in (("toy", "toy", "corrected"),
                                     ("toy-authors", "toy", "paper"),
                                     ("toy_random", "toy_random", "corrected")):
        (runs / folder).mkdir(parents=True)
        (runs / folder / "tab1_x.ipynb").write_text(json.dumps(
            executed(variant, profile, summary if folder == "toy" else None)))
    (runs / "toy_gap").mkdir()
    (runs / "toy_gap" / "tab1_x.ipynb").write_text(json.dumps(executed("toy_gap",
                                                                        status="failed")))
    return runs, figures, sources


def test_runs_are_ordered_variant_then_profile_and_failed_ones_are_left_out(book):
    runs, _, _ = book
    found = pages.runs_of("tab1_x", runs)
    assert [(r.folder, r.profile) for r in found] == [
        ("toy", "corrected"), ("toy-authors", "authors"), ("toy_random", "corrected")]
    assert [r.label for r in found] == ["Toy ViT (CLS)", "Toy ViT (CLS), authors' settings",
                                        "Toy ViT (CLS) (random init)"]


def test_glue_roles_are_pasted_as_myst_nb_would():
    values = {"rate": {"text/plain": "96.2755"}, "name": {"text/plain": "'block none'"},
              "s": {"text/markdown": "**bold**", "text/plain": "<Markdown>"}}
    text = "{glue:text}`rate:.1f` {glue:text}`name` {glue:md}`s` {glue:text}`gone`"
    assert pages.paste(text, values) == "96.3 block none **bold** (missing)"


def test_the_page_holds_the_intro_the_summary_the_small_multiples_and_a_tab_per_run(book):
    runs, figures, sources = book
    page = pages.figure_page("tab1_x", pages.runs_of("tab1_x", runs), figures, sources)
    assert page.startswith("(figure-tab1-x)=\n\n# Table 1: identifiability rate\n\n"
                           "The share of image tokens.")
    assert "colab" not in page.split("## Across")[0]  # the Colab line stays on the run pages
    assert ("| identifiability rate (%) | Toy ViT (CLS) | 96.28 | 60.73 (ViT-B/32) | "
            "not comparable: toy |") in page
    assert page.count("::::{tab-item}") == 3 and page.count(":::{grid-item-card}") == 3
    assert "96.3% and the *toy* is small." in page  # glue pasted, not left as a role
    assert "**Reading**" in page and "\n## Reading" not in page  # no headings inside tabs
    assert "**Settings:** corrected." in page and "\nintro" not in page
    assert "```{raw} html\n<table>t</table>\n```" in page  # kept whole, scripts and all
    assert "```text\nrate 96.28%\n```" in page
    assert "Table 1: identifiability rate, Toy ViT (CLS)." in page  # a caption per figure
    assert "[The executed notebook, with its code](../runs/toy/tab1_x.ipynb)" in page
    images = list((figures / "_images" / "tab1_x").iterdir())
    assert images and all(p.read_bytes().startswith(b"\x89PNG") for p in images)


def test_a_figure_without_runs_says_how_to_run_it(book):
    runs, figures, sources = book
    page = pages.figure_page("fig9_none", [], figures, sources)
    assert "vitcls run --variants toy --notebooks fig9_none" in page


def test_pages_are_rewritten_only_when_they_change(book):
    runs, figures, sources = book
    written = pages.write_pages(runs, figures, sources)
    assert {p.name for p in written} == {"tab1_x.md", "fig9_none.md", "index.md"}
    assert "- [tab1_x](toy/tab1_x.ipynb)" in (runs / "index.md").read_text()
    assert pages.write_pages(runs, figures, sources) == []
    (runs / "toy_random" / "tab1_x.ipynb").unlink()
    assert [p.name for p in pages.write_pages(runs, figures, sources)] == ["tab1_x.md",
                                                                          "index.md"]


#: chapter 1-4 notebooks whose page has no headline number to set beside a reported one
NO_SUMMARY = pages.WITHOUT_NUMBERS


def test_every_main_paper_figure_sets_its_numbers_beside_the_reported_ones():
    """Chapters 1-4: each notebook glues a summary (this run, reported, agreement), so its
    figure page tabulates every run beside the paper; the exceptions say why."""
    from vitcls_utils.running.notebook_rules import chapters

    main = [name for chapter in ("chapter1", "chapter2", "chapter3", "chapter4")
            for name in chapters()[chapter]]
    assert len(main) >= 18
    missing = [name for name in main if name not in NO_SUMMARY
               and "page.summarize(" not in (pages.NOTEBOOKS / f"{name}.ipynb").read_text()]
    assert not missing, missing


def test_the_runs_index_lists_pages_not_a_killed_runs_leftovers(book):
    runs, _, _ = book
    (runs / "toy" / ".tab1_x.partial.ipynb").write_text("{}")  # a SIGKILLed kernel's file
    (runs / "toy" / "tab1_x.failed.ipynb").write_text("{}")
    index = pages.runs_index(runs)
    assert "toy/tab1_x.ipynb" in index
    assert "partial" not in index and ".failed" not in index
