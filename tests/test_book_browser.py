"""The book as a reader sees it: a small book (three toy runs with explorers, their figure pages
and the prose pages) built and loaded in headless Chromium, served from localhost.

- Every page loads cleanly and offline: no console error, no request that fails or leaves the
  machine, every visible image loaded; the explorers' static twins answer clicks.
- Layout at 390 and 1280 px: the main column never overflows (long outputs wrap, wide tables
  scroll inside the column), every image is shown at 70% of its width or more or fills its
  column, and the models page is short with every table inside the screen.
- Navigation: at 390 px the sidebar toggle opens the menu and a link in it navigates; at
  1280 px the toggle collapses the sidebar. A page made from a notebook has a Colab button in
  its header that opens that notebook.
- Apparatus: every catalogue mention ("catalogue E4", "bug B15") is a link to an anchor the
  catalogue page has, the references list author-year labels, and a figure with a caption is
  numbered "Fig. N".

Screenshots at both widths go to ``test-artefacts/screenshots/``."""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vitcls_utils.running import runner

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
ARTEFACTS = ROOT / "test-artefacts" / "screenshots"
#: the executed runs of the small book (made from notebooks/<name>.ipynb)
RUNS = {"fig2": "book/runs/toy/fig2_identifiability_evolution.html",
        "fig5": "book/runs/toy/fig5_explanation_maps.html",
        "tabA6b": "book/runs/toy/tabA6b_value_vectors.html"}
#: the figure pages of the same notebooks (chapter 1's Figure 2, chapter 3's A6b, chapter 6's
#: Table 1); VITCLS_BOOK_SITE=<built html folder> checks every figure page of a built book
FIGURE_PAGES = {"fig2-page": "book/figures/fig2_identifiability_evolution.html",
                "tabA6b-page": "book/figures/tabA6b_value_vectors.html",
                "ghiasi-tab1-page": "book/figures/ghiasi_tab1_cls_isolation.html"}
WHOLE_BOOK = os.environ.get("VITCLS_BOOK_SITE")
if WHOLE_BOOK:
    FIGURE_PAGES.update({f"{p.stem}-page": f"book/figures/{p.name}"
                         for p in sorted(Path(WHOLE_BOOK).glob("book/figures/*.html"))})
PROSE = {"intro": "book/intro.html", "method": "book/method.html",
         "variants": "book/variants.html", "references": "book/references.html",
         "figure-number": "book/numbered_figure.html"}
if WHOLE_BOOK:  # the numbered-figure page is the small book's own addition
    PROSE.pop("figure-number")
PAGES = {**RUNS, **FIGURE_PAGES, **PROSE}
CATALOGUE = "book/catalogue.html"
SIZES = {"desktop": (1280, 1000), "phone": (390, 844)}
INSTANT = "{block: 'center', behavior: 'instant'}"
#: a catalogue mention as the book's text writes it, linked or not
MENTION = r"\b(?:[Cc]atalogue|[Bb]ugs?|[Qq]uirks?)(?:,\s|\s)(?:§\s?\d+|[EBVGC]\d{1,2}[ab]?)(?!\w)"
#: a page with a {figure}: numfig must number it
NUMBERED_FIGURE = """# A numbered figure

:::{figure} favicon.png
:width: 64px

The book's icon, with a caption.
:::
"""


def missing_browser() -> str:
    if not (CHROMIUM and DRIVER):
        return "no Chromium here (apt-get install chromium chromium-driver; .ci/run does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (it is in the [dev] extra)"
    return ""


pytestmark = pytest.mark.skipif(bool(missing_browser()), reason=missing_browser() or "-")


def small_toc(root: Path) -> None:
    """The project's table of contents with one more page, a figure that numfig numbers."""
    import yaml

    (root / "book" / "numbered_figure.md").write_text(NUMBERED_FIGURE)
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    chapters = toc["parts"][-1]["chapters"] if "parts" in toc else toc.setdefault("chapters", [])
    chapters.append({"file": "book/numbered_figure"})
    (root / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A small book: the project's prose pages, three toy runs and their figure pages, built,
    served on localhost."""
    if WHOLE_BOOK:  # a book built elsewhere (make book): serve it as it is
        yield from serve(Path(WHOLE_BOOK))
        return
    root = tmp_path_factory.mktemp("small-book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns("runs",
                                                                                "figures"))
    small_toc(root)
    for pattern in ("fig2_*", "fig5_explanation_maps", "tabA6b_*", "ghiasi_tab1_*"):
        matrix = runner.run(["toy"], pattern, device="cpu", runs_dir=root / "book" / "runs",
                            results_dir=root / "results", log=lambda line: None)
        assert all(j.status == "ran" for j in matrix), runner.summary(matrix)
    build = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build",
                            str(root)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    yield from serve(root / "_build" / "html")


def serve(html: Path):
    """Serve a built book on localhost for the module's tests."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def built(site: str, page: str) -> bool:
    """Whether the small book has the page (the figure pages come from another extension)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{site}/{PAGES.get(page, page)}"):
            return True
    except urllib.error.HTTPError:
        return False


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def load(driver, url: str) -> None:
    driver.get_log("browser"), driver.get_log("performance")  # forget the previous page
    driver.get(url)
    driver.execute_script("return document.readyState")


def requests_of(driver) -> tuple:
    """(every URL the page asked for, the ones that failed) from the DevTools log."""
    asked, failed, urls = [], [], {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
            asked.append(params["request"]["url"])
        elif message["method"] == "Network.loadingFailed" and not params.get("canceled"):
            failed.append(urls.get(params["requestId"], params["requestId"]))
        elif message["method"] == "Network.responseReceived" and \
                params["response"]["status"] >= 400:
            failed.append(params["response"]["url"])
    return asked, failed


def wait_for(condition, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


def skip_unbuilt(site: str, page: str) -> None:
    if page in FIGURE_PAGES and not built(site, page):
        pytest.skip(f"this book has no figure page {PAGES[page]}")


@pytest.mark.parametrize("page", list(PAGES))
def test_pages_load_cleanly_and_offline(site, browser, page):
    skip_unbuilt(site, page)
    browser.set_window_size(*SIZES["desktop"])
    load(browser, f"{site}/{PAGES[page]}")
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    asked, failed = requests_of(browser)
    broken = browser.execute_script(
        "return [...document.images].filter(i => i.offsetParent !== null && "
        "!(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80))")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    for size, (width, height) in SIZES.items():  # loaded at that width, as a reader does
        browser.set_window_size(width, height)
        load(browser, f"{site}/{PAGES[page]}")
        browser.save_screenshot(str(ARTEFACTS / f"{page}-{size}.png"))
        if browser.execute_script("const t = document.querySelector('.vitcls-twin');"
                                  "if (t) t.scrollIntoView(INSTANT); return !!t"
                                  .replace("INSTANT", INSTANT)):
            browser.save_screenshot(str(ARTEFACTS / f"{page}-{size}-explorer.png"))
    assert not errors, errors
    assert not failed, failed
    outside = [u for u in asked if not u.startswith((site, "data:", "about:", "blob:"))]
    assert not outside, f"requests that leave the machine: {outside}"
    assert not broken, broken


@pytest.mark.parametrize("page", ["fig2", "fig5", "tabA6b"])
def test_each_explorer_twin_answers_a_click_and_a_slider(site, browser, page):
    from selenium.webdriver.common.by import By

    browser.set_window_size(*SIZES["desktop"])
    load(browser, f"{site}/{PAGES[page]}")
    twin = browser.find_element(By.CSS_SELECTOR, ".vitcls-twin")
    caption = twin.find_element(By.CSS_SELECTOR, ".vitcls-caption")
    first = caption.text
    assert first and first != "no data"
    buttons = [b for b in twin.find_elements(By.CSS_SELECTOR, "button") if "on" not in
               b.get_attribute("class")]
    # the theme scrolls smoothly: a click right after a smooth scroll lands where it was
    browser.execute_script(f"arguments[0].scrollIntoView({INSTANT})", buttons[0])
    buttons[0].click()
    assert caption.text != first and "on" in buttons[0].get_attribute("class")
    slider = twin.find_element(By.CSS_SELECTOR, "input[type=range]")
    before = caption.text
    browser.execute_script("arguments[0].value = arguments[0].min; "
                           "arguments[0].dispatchEvent(new Event('input'))", slider)
    assert caption.text != before and "block 1" in caption.text
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


# -- layout -----------------------------------------------------------------------------------

#: what sticks out of the main column: an element past its right edge that no scrolling box
#: holds, a printed output cut at the edge, or a page that scrolls sideways
OVERFLOW = """
const art = document.querySelector('article.bd-article');
const edge = art.getBoundingClientRect().right;
const name = e => e.tagName.toLowerCase() + (e.className && e.className.baseVal === undefined
  ? '.' + e.className.trim().split(/\\s+/).slice(0, 2).join('.') : '');
const held = e => {
  for (let a = e.parentElement; a && a !== art; a = a.parentElement)
    if (getComputedStyle(a).overflowX !== 'visible') return true;
  return false;
};
const bad = [];
const page = document.documentElement;
if (page.scrollWidth > page.clientWidth + 1) bad.push(`the page scrolls sideways (${page.scrollWidth} px)`);
for (const e of art.querySelectorAll('*')) {
  const r = e.getBoundingClientRect();
  if (r.width && r.height && r.right > edge + 1 && !held(e))
    bad.push(`${name(e)} ends ${Math.round(r.right - edge)} px past the column`);
}
for (const p of art.querySelectorAll('.cell_output pre'))
  if (p.offsetParent && p.scrollWidth > p.clientWidth + 1)
    bad.push('a printed output cut off at the edge: ' + p.textContent.trim().slice(0, 60));
return bad.slice(0, 8);
"""
#: images shown at less than 70% of their width without filling their column
SMALL_IMAGES = """
const art = document.querySelector('article.bd-article');
const bad = [];
for (const img of art.querySelectorAll('img')) {
  if (!img.offsetParent || !img.naturalWidth) continue;
  let box = img.parentElement;
  while (box.parentElement && getComputedStyle(box).display.startsWith('inline'))
    box = box.parentElement;
  const style = getComputedStyle(box);
  const column = box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const shown = img.getBoundingClientRect().width;
  if (shown < 0.7 * img.naturalWidth && shown < 0.95 * column)
    bad.push(`${img.src.split('/').pop().slice(0, 50)}: ${Math.round(shown)} of ` +
             `${img.naturalWidth} px, column ${Math.round(column)} px`);
}
return bad;
"""


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("page", list(PAGES))
def test_the_main_column_never_overflows_and_images_keep_their_size(site, browser, page, size):
    skip_unbuilt(site, page)
    browser.set_window_size(*SIZES[size])
    load(browser, f"{site}/{PAGES[page]}")
    browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    assert not browser.execute_script(OVERFLOW), browser.execute_script(OVERFLOW)
    assert not browser.execute_script(SMALL_IMAGES), browser.execute_script(SMALL_IMAGES)


@pytest.mark.parametrize("size", list(SIZES))
def test_the_models_page_is_short_and_every_table_fits_the_screen(site, browser, size):
    width, height = SIZES[size]
    browser.set_window_size(width, height)
    load(browser, f"{site}/{PAGES['variants']}")
    tables = browser.execute_script(
        "return [...document.querySelectorAll('article table')].map(t => "
        "[t.scrollWidth, t.parentElement.clientWidth, t.rows.length])")
    assert len(tables) >= 5  # one per family
    assert all(table <= column + 1 for table, column, _ in tables), tables
    tall = browser.execute_script("return document.documentElement.scrollHeight")
    assert tall < (5000 if size == "desktop" else 9000), f"the models page is {tall} px tall"
    details = browser.execute_script(
        "return document.querySelectorAll('article details.sd-dropdown').length")
    assert details == len(tables)  # the details of each family, folded


# -- navigation -------------------------------------------------------------------------------

SIDEBAR = ("const s = document.querySelector('.bd-sidebar-primary');"
           "const r = s.getBoundingClientRect();"
           "return getComputedStyle(s).visibility !== 'hidden' && r.right > 1 && r.left > -1")


def test_on_a_phone_the_sidebar_toggle_opens_the_menu_and_a_link_in_it_navigates(site, browser):
    from selenium.webdriver.common.by import By

    browser.set_window_size(*SIZES["phone"])
    load(browser, f"{site}/{PROSE['intro']}")
    assert not browser.execute_script(SIDEBAR), "the menu is open before the toggle"
    browser.find_element(By.CSS_SELECTOR, "button.primary-toggle").click()
    assert wait_for(lambda: browser.execute_script(SIDEBAR)), "the toggle did not open the menu"
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTEFACTS / "sidebar-phone-open.png"))
    link = browser.find_element(By.CSS_SELECTOR, ".bd-sidebar-primary a[href$='variants.html']")
    link.click()
    assert wait_for(lambda: browser.current_url.endswith("/book/variants.html")), \
        browser.current_url


def test_on_a_desktop_the_sidebar_toggle_collapses_the_sidebar(site, browser):
    from selenium.webdriver.common.by import By

    browser.set_window_size(*SIZES["desktop"])
    load(browser, f"{site}/{PROSE['intro']}")
    assert browser.execute_script(SIDEBAR), "the sidebar is not shown on a desktop"
    left = browser.execute_script(
        "return document.querySelector('article.bd-article').getBoundingClientRect().left")
    browser.find_element(By.CSS_SELECTOR, "button.primary-toggle").click()
    assert wait_for(lambda: not browser.execute_script(SIDEBAR)), "the sidebar stayed"
    assert wait_for(lambda: browser.execute_script(
        "return document.querySelector('article.bd-article').getBoundingClientRect().left")
        < left - 100), "the text did not take the sidebar's room"
    browser.save_screenshot(str(ARTEFACTS / "sidebar-desktop-collapsed.png"))
    browser.find_element(By.CSS_SELECTOR, "button.primary-toggle").click()
    assert wait_for(lambda: browser.execute_script(SIDEBAR)), "the toggle did not reopen it"


@pytest.mark.parametrize("page", list(RUNS) + list(FIGURE_PAGES))
def test_a_notebook_page_has_a_colab_button_that_opens_its_notebook(site, browser, page):
    from selenium.webdriver.common.by import By

    from vitcls_utils.running.colab import colab_url

    skip_unbuilt(site, page)
    notebook = Path(PAGES[page]).with_suffix(".ipynb").name
    assert (ROOT / "notebooks" / notebook).is_file()
    for size in SIZES:
        browser.set_window_size(*SIZES[size])
        load(browser, f"{site}/{PAGES[page]}")
        buttons = browser.find_elements(By.CSS_SELECTOR, ".article-header-buttons "
                                                         "a.btn-launch-colab")
        assert len(buttons) == 1, f"{size}: {len(buttons)} Colab buttons"
        assert buttons[0].get_attribute("href") == colab_url(notebook)
        assert buttons[0].is_displayed(), f"the Colab button is hidden on a {size}"


def test_a_prose_page_has_no_colab_button(site, browser):
    from selenium.webdriver.common.by import By

    load(browser, f"{site}/{PROSE['intro']}")
    assert not browser.find_elements(By.CSS_SELECTOR, "a.btn-launch-colab")


# -- apparatus --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def catalogue_anchors(site, browser) -> set:
    load(browser, f"{site}/{CATALOGUE}")
    anchors = set(browser.execute_script(
        "return [...document.querySelectorAll('[id]')].map(e => e.id)"))
    assert {"catalogue-e4", "catalogue-b15", "catalogue-s6", "catalogue-v3"} <= anchors
    return anchors


#: catalogue links of a page, and the mentions left as plain text (outside code and links)
MENTIONS = """
const art = document.querySelector('article.bd-article');
const links = [...art.querySelectorAll('a[href*="catalogue.html#"]')].map(a => [a.pathname, a.hash.slice(1), a.textContent]);
const mention = new RegExp(arguments[0], 'u');
const walker = document.createTreeWalker(art, NodeFilter.SHOW_TEXT);
const plain = [];
for (let t = walker.nextNode(); t; t = walker.nextNode()) {
  if (t.parentElement.closest('pre, code, a, script, style, .highlight, mjx-container')) continue;
  const found = t.textContent.match(mention);
  if (found) plain.push(found[0]);
}
return [links, plain];
"""


#: pages whose text mentions catalogue entries (the others are checked for plain mentions)
MENTIONING = ("fig2", "fig5", "fig2-page", "method")


@pytest.mark.parametrize("page", [*MENTIONING, "tabA6b", "intro"])
def test_every_catalogue_mention_is_a_link_to_an_anchor_of_the_catalogue(
        site, browser, catalogue_anchors, page):
    skip_unbuilt(site, page)
    browser.set_window_size(*SIZES["desktop"])
    load(browser, f"{site}/{PAGES[page]}")
    links, plain = browser.execute_script(MENTIONS, MENTION)
    assert not plain, f"mentions that are not links: {plain}"
    if page in MENTIONING:
        assert links, "the page mentions the catalogue and links to none of it"
    for path, anchor, text in links:
        assert path.endswith("/" + CATALOGUE), path
        assert anchor in catalogue_anchors, f"{text!r} points at #{anchor}, not on the page"


def test_a_catalogue_link_lands_on_its_entry(site, browser, catalogue_anchors):
    from selenium.webdriver.common.by import By

    browser.set_window_size(*SIZES["desktop"])
    load(browser, f"{site}/{PAGES['fig2']}")
    link = browser.find_element(By.CSS_SELECTOR, "article a[href$='catalogue.html#catalogue-e4']")
    assert link.text == "E4"
    browser.execute_script("arguments[0].click()", link)
    assert wait_for(lambda: browser.current_url.endswith("/book/catalogue.html#catalogue-e4"))
    assert wait_for(lambda: browser.execute_script(  # after the theme's smooth scroll
        "const r = document.getElementById('catalogue-e4').getBoundingClientRect();"
        "return r.top >= -5 && r.top < window.innerHeight / 2")), "the entry is not in view"


def test_the_references_read_author_and_year(site, browser):
    load(browser, f"{site}/{PROSE['references']}")
    labels = browser.execute_script(
        "return [...document.querySelectorAll('div.citation .label')].map(l => l.textContent)")
    labels = [label.strip("[] ") for label in labels]
    for expected in ("Vilas et al., 2023", "Dosovitskiy et al., 2021", "Ghiasi et al., 2022",
                     "d'Ascoli et al., 2021"):
        assert expected in labels, labels
    assert all(re.fullmatch(r"[^,]+, (19|20)\d\d[a-z]?", label) for label in labels), labels
    load(browser, f"{site}/{PROSE['intro']}")
    text = browser.execute_script("return document.querySelector('article').innerText")
    assert "(Vilas et al., 2023)" in text


def test_a_figure_with_a_caption_is_numbered(site, browser):
    if "figure-number" in PROSE:  # the small book's own page of a numbered figure
        load(browser, f"{site}/{PROSE['figure-number']}")
        numbers = browser.execute_script(
            "return [...document.querySelectorAll('figcaption .caption-number')]"
            ".map(n => n.textContent)")
        assert numbers and all(re.fullmatch(r"Fig\. \d+ ?", n) for n in numbers), numbers
    if built(site, "fig2-page"):  # the figure pages' figures too
        load(browser, f"{site}/{FIGURE_PAGES['fig2-page']}")
        unnumbered = browser.execute_script(
            "return [...document.querySelectorAll('figure')].filter(f => "
            "f.querySelector('figcaption') && !f.querySelector('.caption-number')).length")
        numbered = browser.execute_script(
            "return document.querySelectorAll('figcaption .caption-number').length")
        assert unnumbered == 0 and numbered > 0, (unnumbered, numbered)


#: chapters 1-7's figure pages put the paper's reported numbers beside every run, or say why
#: the paper has none for this figure
REPORTED = re.compile(r"\breported\b|\bthe paper prints no number\b", re.I)
INTERVAL = re.compile(r"\[-?\d+(\.\d+)?, -?\d+(\.\d+)?\]")


def pages_printing_intervals() -> list:
    """The figure pages whose notebook's stored headline output (the cells nbval compares)
    prints a 95% CI with an interval ``[lo, hi]``: read from the notebooks, so that a page
    converted to intervals joins the sample when its reference output is stored."""
    pages = []
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        text = "".join("".join(output.get("text", "")) for cell in cells
                       if "nbval-check-output" in cell.get("metadata", {}).get("tags", [])
                       for output in cell.get("outputs", []))
        if "95% CI" in text and INTERVAL.search(text):
            pages.append(f"{notebook.stem}-page")
    return pages


#: figure pages whose tables show 95% intervals: chapter 1's Figure 2 and chapter 6's Table 1
#: in the small book; with VITCLS_BOOK_SITE, a sample of the headline tables of chapters 1-7
#: and every page whose notebook's headline output prints an interval (chapters 1-8)
WITH_INTERVALS = ["fig2-page", "ghiasi-tab1-page"] + (sorted({f"{name}-page" for name in (
    "tab1_identifiability_rate", "tab_attention_perturbation", "tab_context_perturbation",
    "fig4a_class_value_agreement", "fig4b_key_value_agreement", "figA11_perturbation_test",
    "fig5_faithfulness_suite", "ghiasi_tab2_fgbg", "convit_tab5_tab6_masking")}
    | set(pages_printing_intervals())) if WHOLE_BOOK else [])


@pytest.mark.parametrize("page", list(FIGURE_PAGES))
def test_a_figure_page_sets_its_runs_beside_the_reported_numbers(site, browser, page):
    from selenium.webdriver.common.by import By

    skip_unbuilt(site, page)
    browser.set_window_size(*SIZES["desktop"])
    load(browser, f"{site}/{PAGES[page]}")
    across = browser.find_elements(By.CSS_SELECTOR, "section#across-the-runs")
    assert across, "no 'Across the runs' section"
    assert REPORTED.search(across[0].text), across[0].text[:500]
    tabs = browser.find_elements(By.CSS_SELECTOR, ".sd-tab-set > label")
    assert tabs, "no tab per run"


@pytest.mark.parametrize("page", WITH_INTERVALS)
def test_a_figure_page_shows_its_headline_numbers_with_95_percent_intervals(site, browser, page):
    from selenium.webdriver.common.by import By

    path = PAGES.get(page, f"book/figures/{page[:-len('-page')]}.html")
    if not built(site, path):
        pytest.skip(f"this book has no figure page {path}")
    browser.set_window_size(*SIZES["desktop"])
    load(browser, f"{site}/{path}")
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "95% CI" in text, f"{page} names no 95% CI"
    assert INTERVAL.search(text), f"{page} shows no interval [lo, hi]"
