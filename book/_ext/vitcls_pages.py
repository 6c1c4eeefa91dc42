"""Sphinx extension of the book: the figure pages (``book/figures/<notebook>.md``), one per
paper figure or table with every run of it, written from the executed runs in ``book/runs/``
before the sources are read (:mod:`vitcls_utils.running.figure_pages`). A page whose text did
not change is left alone, so an incremental build re-reads only the figures that ran again.
"""
from pathlib import Path


def _write_pages(app, config) -> None:
    from vitcls_utils.running.figure_pages import write_pages

    book = Path(app.srcdir) / "book"
    write_pages(book / "runs", book / "figures")


def setup(app):
    # before the table of contents is read (sphinx-external-toc, priority 500)
    app.connect("config-inited", _write_pages, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
