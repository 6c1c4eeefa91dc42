"""Sphinx extension of the book: its scholarly apparatus and navigation.

- **Catalogue links.** Every mention of an entry of the catalogue page in the rendered text
  ("catalogue E4", "catalogue §6", "bug B15", "bugs B5, B6", "catalogue E7-E9", "catalogue V3")
  becomes a link to that entry's anchor, ``(catalogue-e4)=`` and the like in
  ``book/catalogue.md``. It is a post-transform of the doctree, so it reaches prose pages,
  executed notebooks (their markdown cells and markdown outputs) and pasted glue alike, while
  the notebooks' own markdown stays plain text (it is read in Colab too). Code, literal text,
  raw HTML, maths and existing links are left alone. A mention whose anchor does not exist is a
  warning, so a strict build fails on it.
- **Author-year citations.** The references page lists "Vilas et al., 2023" instead of an
  alpha label, sorted by author and year, and keeps the titles' capitalisation as the ``.bib``
  file spells it (a pybtex formatting style, ``vitcls_author_year``, named by
  ``bibtex_default_style`` in ``_config.yml``); citations in the text read "(Vilas et al.,
  2023)" or "Vilas et al. (2023)" (a referencing style of the same name, named by
  ``bibtex_reference_style``).
- **A Colab button in the page header** of every page made from a notebook of ``notebooks/``:
  an executed run (``book/runs/<variant>/<name>``) or a figure page (``book/figures/<name>``),
  pointing at :func:`vitcls_utils.running.colab.colab_url` of that notebook.

``tests/test_book_browser.py`` checks each of these in a browser.
"""
from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# catalogue links

#: the labels of the catalogue's entries (``(catalogue-e4)=`` in book/catalogue.md)
CATALOGUE_LABEL = "catalogue-{}"
#: one entry id: an experiment (E1-E16, E5a), a quirk (B1-B22), an analysis of chapters 5-7
#: (V1-V8, G1-G11, C1-C7) or a section (§6, "section 6")
ENTRY = r"(?:§\s?\d+|[Ss]ection\s\d+|[EBVGC]\d{1,2}[ab]?)"
#: what joins the ids of a list or a range: "E7-E9", "B1–B22", "B5, B6", "E5a and E5b"
JOIN = r"(?:\s?[-–—]\s?|,\s|\sand\s|\sor\s)"
#: the words after which an id is a catalogue entry
KEYWORD = r"\b(?:[Cc]atalogue|[Bb]ugs?|[Qq]uirks?)"
MENTION = re.compile(rf"{KEYWORD}(?:,\s|\s)(?P<ids>{ENTRY}(?:{JOIN}{ENTRY})*)(?![\w])")
#: a text that follows a link to the catalogue page: "{doc}`catalogue`, B1–B22"
AFTER_LINK = re.compile(rf"^(?:,\s|\s)(?P<ids>{ENTRY}(?:{JOIN}{ENTRY})*)(?![\w])")
ONE = re.compile(ENTRY)
#: nodes whose text is never linked
SKIP = (nodes.FixedTextElement, nodes.literal, nodes.raw, nodes.math, nodes.reference,
        nodes.target, addnodes.pending_xref, addnodes.desc_signature, nodes.comment)


def entry_label(entry: str) -> str:
    """The catalogue label an id names: "E4" -> "catalogue-e4", "§6" -> "catalogue-s6"."""
    number = re.search(r"\d+", entry)
    if entry.startswith(("§", "S", "s")):
        return CATALOGUE_LABEL.format(f"s{number.group(0)}")
    return CATALOGUE_LABEL.format(entry.lower())


def mentions(text: str, after_catalogue_link: bool = False) -> list:
    """``[(start, end, label)]`` of every catalogue id mentioned in ``text``, in order."""
    found = []
    matches = list(MENTION.finditer(text))
    if after_catalogue_link:
        first = AFTER_LINK.match(text)
        matches = ([first] if first else []) + [m for m in matches
                                                if not first or m.start() >= first.end()]
    for match in matches:
        offset = match.start("ids")
        for one in ONE.finditer(match.group("ids")):
            found.append((offset + one.start(), offset + one.end(), entry_label(one.group(0))))
    return found


def _links_to_catalogue(node) -> bool:
    if isinstance(node, addnodes.pending_xref):
        return node.get("reftype") == "doc" and node.get("reftarget", "").endswith("catalogue")
    if isinstance(node, nodes.reference):
        return node.astext().strip().lower().endswith("catalogue")
    return False


class CatalogueLinks(SphinxPostTransform):
    """Wrap each catalogue mention in a cross-reference to its anchor (see the module)."""

    #: after myst-nb pastes glue and picks mime types (4, 5), before references resolve (10)
    default_priority = 7

    def run(self, **kwargs) -> None:
        anchors = self.env.domaindata["std"]["anonlabels"]
        for element in list(_linkable(self.document)):
            # a run of adjacent text nodes is one text: MyST keeps a line break as its own node
            index = 0
            while index < len(element.children):
                if not isinstance(element[index], nodes.Text):
                    index += 1
                    continue
                end = index
                while end < len(element.children) and isinstance(element[end], nodes.Text):
                    end += 1
                after = index > 0 and _links_to_catalogue(element[index - 1])
                pieces = self._linked("".join(str(t) for t in element[index:end]), after,
                                      anchors, element)
                if pieces is None:
                    index = end
                    continue
                element[index:end] = pieces
                index += len(pieces)

    def _linked(self, source: str, after: bool, anchors, where):
        """``source`` as text and cross-reference nodes, or None when it mentions nothing."""
        pieces, done = [], 0
        for start, end, label in mentions(source, after_catalogue_link=after):
            if label not in anchors and label.rstrip("ab") in anchors:
                label = label.rstrip("ab")  # "bug B15a": a part of B15
            if label not in anchors:
                LOGGER.warning(f"catalogue mention {source[start:end]!r} has no anchor "
                               f"({label}) in the catalogue",
                               location=where, type="vitcls", subtype="catalogue")
                continue
            if start > done:
                pieces.append(nodes.Text(source[done:start]))
            pieces.append(self._xref(source[start:end], label))
            done = end
        if not done:
            return None
        if done < len(source):
            pieces.append(nodes.Text(source[done:]))
        return pieces

    def _xref(self, shown: str, label: str):
        ref = addnodes.pending_xref("", refdomain="std", reftype="ref", reftarget=label,
                                   refexplicit=True, refwarn=True, refdoc=self.env.docname)
        ref += nodes.inline(shown, shown, classes=["vitcls-catalogue-link"])
        return ref


def _linkable(node):
    """``node`` and every element below it outside code, literals, maths and links."""
    yield node
    for child in node.children:
        if isinstance(child, nodes.Element) and not isinstance(child, SKIP):
            yield from _linkable(child)


# ---------------------------------------------------------------------------------------------
# author-year bibliography labels

STYLE = "vitcls_author_year"


def _register_bibliography_style() -> None:
    from pybtex.plugin import register_plugin
    from pybtex.richtext import Text
    from pybtex.style.formatting.unsrt import Style as Unsrt
    from pybtex.style.labels import BaseLabelStyle
    from pybtex.style.template import field, sentence

    def surname(person) -> str:
        parts = person.rich_prelast_names + person.rich_last_names
        return " ".join(str(Text(part).render_as("text")) for part in parts)

    class AuthorYearLabels(BaseLabelStyle):
        """"Vilas et al., 2023", "Abnar and Zuidema, 2020", "Geva, 2021"; a repeated label gets
        a, b, ... after its year."""

        def format_labels(self, sorted_entries):
            labels = [self.format_label(entry) for entry in sorted_entries]
            repeated = {label for label in labels if labels.count(label) > 1}
            seen: dict = {}
            for label in labels:
                if label in repeated:
                    seen[label] = seen.get(label, 0) + 1
                    label += "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
                yield label

        @staticmethod
        def format_label(entry) -> str:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            names = [surname(p) for p in people]
            if not names:
                who = entry.key
            elif len(names) == 1:
                who = names[0]
            elif len(names) == 2:
                who = f"{names[0]} and {names[1]}"
            else:
                who = f"{names[0]} et al."
            return f"{who}, {entry.fields.get('year', 'n.d.')}"

    class AuthorYearStyle(Unsrt):
        """unsrt's entries, author-year labels, sorted by author and year, titles as spelled."""

        default_label_style = STYLE
        default_sorting_style = "author_year_title"

        def format_title(self, e, which_field, as_sentence=True):
            title = field(which_field)  # as the .bib file spells it: "ViT", "ImageNet-21K"
            return sentence[title] if as_sentence else title

    register_plugin("pybtex.style.labels", STYLE, AuthorYearLabels)
    register_plugin("pybtex.style.formatting", STYLE, AuthorYearStyle)
    _register_reference_style()


def _register_reference_style() -> None:
    """``vitcls_author_year``: sphinxcontrib-bibtex's author-year citations in round brackets,
    "(Vilas et al., 2023)" and "Vilas et al. (2023)", several keys separated by semicolons."""
    from dataclasses import dataclass, field

    from sphinxcontrib.bibtex.plugin import register_plugin
    from sphinxcontrib.bibtex.style.referencing import BracketStyle
    from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle

    def round_brackets() -> BracketStyle:
        return BracketStyle(left="(", right=")", sep="; ")

    @dataclass
    class RoundAuthorYear(AuthorYearReferenceStyle):
        bracket_textual: BracketStyle = field(default_factory=round_brackets)
        bracket_parenthetical: BracketStyle = field(default_factory=round_brackets)
        bracket_author: BracketStyle = field(default_factory=round_brackets)
        bracket_label: BracketStyle = field(default_factory=round_brackets)
        bracket_year: BracketStyle = field(default_factory=round_brackets)

    register_plugin("sphinxcontrib.bibtex.style.referencing", STYLE, RoundAuthorYear,
                    force=True)


# ---------------------------------------------------------------------------------------------
# the Colab button

#: docnames of pages made from a notebook of notebooks/: book/runs/<variant>/<name>,
#: book/figures/<name>
NOTEBOOK_PAGE = re.compile(r"^book/(?:runs/[^/]+|figures)/(?P<name>[^/]+)$")


def notebook_of(pagename: str):
    """The notebook of ``notebooks/`` a page was made from (its file name), or None."""
    from vitcls_utils.base import paths

    found = NOTEBOOK_PAGE.match(pagename)
    if found is None:
        return None
    name = f"{found.group('name')}.ipynb"
    return name if (Path(paths.ROOT) / "notebooks" / name).is_file() else None


def _colab_button(app, pagename, templatename, context, doctree):
    notebook = notebook_of(pagename)
    if notebook is None or "header_buttons" not in context:
        return
    from vitcls_utils.running.colab import colab_url

    context["header_buttons"].insert(0, {
        "type": "link", "url": colab_url(notebook), "text": "Colab",
        "tooltip": "Open this page's notebook in Colab",
        "icon": "_static/images/logo_colab.png", "label": "launch-colab"})


# ---------------------------------------------------------------------------------------------
# the book's own static files

def _refresh_static(app, exception):
    """Copy the book's static files (``html_static_path``) that changed: when no page is out of
    date, Sphinx finishes without copying them, and a changed stylesheet would not arrive."""
    if exception is not None or app.builder.format != "html":
        return
    import filecmp
    import shutil

    target = Path(app.outdir) / "_static"
    for entry in app.config.html_static_path:
        folder = Path(app.confdir) / entry
        for source in folder.rglob("*") if folder.is_dir() else []:
            copy = target / source.relative_to(folder)
            if source.is_file() and not (copy.is_file() and filecmp.cmp(source, copy, False)):
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, copy)


def setup(app):
    _register_bibliography_style()
    app.add_post_transform(CatalogueLinks)
    # after sphinx-book-theme empties the list (500) and fills it (501)
    app.connect("html-page-context", _colab_button, priority=600)
    app.connect("build-finished", _refresh_static)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
