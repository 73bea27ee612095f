"""The site (``make site``: reproduce/book.py) in a real browser, Debian's Chromium driven by
Selenium: every page loads with no console error, no missing image, every equation rendered by
the offline MathJax, and no absolute path of the build machine in its text. Screenshots of every
page are left in build/site-test/shots/ to be looked at."""
import functools
import http.server
import json
import re
import shutil
import sys
import threading
from pathlib import Path

import pytest
from selenium import webdriver

from test_clean_notebooks import ABSOLUTE


ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
OUT = ROOT / "build/site-test"
# as the machine's notes advise for a closed network: no background connections
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    sys.path.insert(0, str(ROOT / "reproduce"))
    from book import build

    html = build(OUT)
    handler = functools.partial(Quiet, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [str(p) for p in (CHROMIUM, DRIVER) if not p.exists()]
    assert not missing, f"{missing} missing: install Debian's chromium and chromium-driver (.ci/run does)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS + (f"--user-data-dir={tmp_path_factory.mktemp('chromium')}", "--window-size=1280,1600"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(DRIVER)), options=options)
    yield driver
    driver.quit()


def pages(html: Path) -> list[str]:
    return sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html") if "_static" not in p.parts)


MATHJAX_DONE = """const done = arguments[arguments.length - 1];
if (window.MathJax && MathJax.startup && MathJax.startup.promise) MathJax.startup.promise.then(() => done(true));
else done(false);"""


def test_every_page_loads_clean_in_chromium(site, browser):
    html, url = site
    shots = OUT / "shots"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    found, notebooks = {}, [p for p in pages(html) if p.count("/") == 1]
    assert "index.html" in pages(html) and notebooks, pages(html)
    for page in pages(html):
        browser.get(f"{url}/{page}")
        browser.execute_async_script(MATHJAX_DONE)
        problems = [f"console: {e['message']}" for e in browser.get_log("browser")
                    if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]  # the browser's own ask
        problems += [f"missing image {src}" for src in browser.execute_script(
            "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")]
        unrendered = browser.execute_script(
            "return [...document.querySelectorAll('.math')].filter(e => !e.querySelector('mjx-container')).length")
        problems += [f"{unrendered} equation(s) not rendered"] if unrendered else []
        text = browser.execute_script("return document.body.innerText")
        problems += [f"absolute path {m.group()!r}" for m in ABSOLUTE.finditer(text)]
        if page in notebooks:
            source = json.loads((html.parent / "src" / page.replace(".html", ".ipynb")).read_text())
            has_math = any("$" in re.sub(r"`[^`]*`", "", "".join(c["source"]))  # a `$VARIABLE` in code is no math
                           for c in source["cells"] if c["cell_type"] == "markdown")
            rendered = browser.execute_script("return document.querySelectorAll('mjx-container').length")
            problems += ["its equations were not turned into math"] if has_math and not rendered else []
        if page == "index.html":  # one notebook with several runs (the model cards) must not list them alike
            titles = browser.execute_script("return [...document.querySelectorAll('.sidebar-tree a')].map(a => a.innerText)")
            problems += [f"contents list {t!r} twice" for t in {t for t in titles if titles.count(t) > 1}]
        browser.save_screenshot(str(shots / (page.replace("/", "_").replace(".html", ".png"))))
        if problems:
            found[page] = problems
    assert not found, json.dumps(found, indent=1)
