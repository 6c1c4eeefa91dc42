"""Sphinx extension of the book: pages that load cleanly offline.

- MathJax is served from the book itself (the files of the ``django-static-mathjax`` package,
  MathJax 3), never from a CDN.
- Each script once per page: sphinx-thebe and sphinx-togglebutton add their inline
  configuration every time Sphinx reads the sources, which happens twice in a Jupyter Book 1
  build; the second ``const THEBE_JS_URL`` is a SyntaxError on every page.
- A first visit gets a colour mode (the theme reports none as an error in the console).

The browser test (tests/test_book_browser.py) found each of these.
"""
import importlib.util
import shutil
from pathlib import Path

from sphinx.errors import ExtensionError

MATHJAX = "mathjax/tex-mml-chtml.js"  # under _static/
#: what the combined component loads at run time: its fonts and the TeX extensions
MATHJAX_PARTS = ("tex-mml-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions")


def _mathjax_files() -> Path:
    spec = importlib.util.find_spec("mathjax")
    folder = None if spec is None else \
        Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
    if folder is None or not (folder / "tex-mml-chtml.js").is_file():
        raise ExtensionError("the book serves MathJax itself: pip install django-static-mathjax "
                             "(it is in vitcls-utils[dev])")
    return folder


def _use_local_mathjax(app, config):
    _mathjax_files()
    config.mathjax_path = MATHJAX


def _copy_mathjax(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    source, target = _mathjax_files(), Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, dirs_exist_ok=True)
        else:
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / part, target / part)


def _page(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        name = getattr(script, "filename", None) or ""  # an inline script: None or ""
        key = (name, tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique
    context["default_mode"] = context.get("default_mode") or "light"


def setup(app):
    app.connect("config-inited", _use_local_mathjax, priority=900)
    app.connect("html-page-context", _page, priority=900)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
