"""The book as a reader sees it: a small book (three toy pages with explorers) built and loaded
in headless Chromium, served from localhost. No console error, no request that fails or leaves
the machine, every visible image loaded, and the explorers' static twins answer clicks.
Screenshots at desktop and phone widths go to ``test-artefacts/screenshots/``."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from vitcls_utils.running import runner

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
ARTEFACTS = ROOT / "test-artefacts" / "screenshots"
PAGES = {"fig2": "book/runs/toy/fig2_identifiability_evolution.html",
         "fig5": "book/runs/toy/fig5_explanation_maps.html",
         "tabA6b": "book/runs/toy/tabA6b_value_vectors.html",
         "intro": "book/intro.html"}
SIZES = {"desktop": (1280, 1000), "phone": (390, 844)}


def missing_browser() -> str:
    if not (CHROMIUM and DRIVER):
        return "no Chromium here (apt-get install chromium chromium-driver; .ci/run does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (it is in the [dev] extra)"
    return ""


pytestmark = pytest.mark.skipif(bool(missing_browser()), reason=missing_browser() or "-")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A small book: the project's prose pages and three toy runs, built, served on localhost."""
    root = tmp_path_factory.mktemp("small-book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns("runs"))
    for pattern in ("fig2_*", "fig5_*", "tabA6b_*"):
        matrix = runner.run(["toy"], pattern, device="cpu", runs_dir=root / "book" / "runs",
                            results_dir=root / "results", log=lambda line: None)
        assert all(j.status == "ran" for j in matrix), runner.summary(matrix)
    build = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build",
                            str(root)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root / "_build" / "html"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


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


@pytest.mark.parametrize("page", list(PAGES))
def test_pages_load_cleanly_and_offline(site, browser, page):
    browser.set_window_size(*SIZES["desktop"])
    load(browser, f"{site}/{PAGES[page]}")
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    asked, failed = requests_of(browser)
    assert not failed, failed
    outside = [u for u in asked if not u.startswith((site, "data:", "about:", "blob:"))]
    assert not outside, f"requests that leave the machine: {outside}"
    broken = browser.execute_script(
        "return [...document.images].filter(i => i.offsetParent !== null && "
        "!(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80))")
    assert not broken, broken
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    for size, (width, height) in SIZES.items():  # loaded at that width, as a reader does
        browser.set_window_size(width, height)
        load(browser, f"{site}/{PAGES[page]}")
        browser.save_screenshot(str(ARTEFACTS / f"{page}-{size}.png"))
        if browser.execute_script("const t = document.querySelector('.vitcls-twin');"
                                  "if (t) t.scrollIntoView(); return !!t"):
            browser.save_screenshot(str(ARTEFACTS / f"{page}-{size}-explorer.png"))


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
    browser.execute_script("arguments[0].scrollIntoView()", buttons[0])
    buttons[0].click()
    assert caption.text != first and "on" in buttons[0].get_attribute("class")
    slider = twin.find_element(By.CSS_SELECTOR, "input[type=range]")
    before = caption.text
    browser.execute_script("arguments[0].value = arguments[0].min; "
                           "arguments[0].dispatchEvent(new Event('input'))", slider)
    assert caption.text != before and "block 1" in caption.text
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
