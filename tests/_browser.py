"""Headless Chromium for the tests that look at the book as a reader does (tests/test_live_sliders.py,
tests/test_rendered.py): Debian's ``chromium`` and ``chromium-driver`` driven by Selenium.

Install them with ``apt-get install -y chromium chromium-driver`` (and ``pip install -e ".[test]"`` for
Selenium). Where they are missing the browser tests are skipped with the reason, unless
``LORSP_REQUIRE_BROWSER=1`` (CI sets it), which turns the skip into a failure.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver",)
# the network blocked: every host name resolves to nothing and every proxied connection goes to a closed port
OFFLINE_FLAGS = ("--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9")


def _first(names, extra=()) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    for path in extra:
        if Path(path).is_file():
            return str(path)
    return None


def missing_browser() -> str | None:
    """Why no browser test can run here, or None when Selenium, chromium and chromedriver are all present."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if _first(CHROMIUM_NAMES, ("/usr/lib/chromium/chromium",)) is None:
        return "no chromium browser (apt-get install -y chromium chromium-driver)"
    if _first(DRIVER_NAMES, ("/usr/lib/chromium/chromedriver",)) is None:
        return "no chromedriver (apt-get install -y chromium-driver)"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``; fail instead where the environment says the check must run (CI)."""
    if os.environ.get("LORSP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"LORSP_REQUIRE_BROWSER=1 but the browser test cannot run: {reason}")
    pytest.skip(reason)


def start_chromium(offline: bool = False, width: int = 1300, height: int = 1600):
    """A headless Chromium (Selenium ``webdriver.Chrome``); with ``offline`` it reaches no network."""
    reason = missing_browser()
    if reason:
        skip_or_fail(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM_NAMES, ("/usr/lib/chromium/chromium",))
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    if offline:
        for flag in OFFLINE_FLAGS:
            options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(_first(DRIVER_NAMES, ("/usr/lib/chromium/chromedriver",)))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


def wait_for(condition, timeout: float, what: str, interval: float = 0.25):
    """Poll ``condition()`` until it returns something truthy (returned) or fail after ``timeout`` seconds,
    saying ``what`` was awaited and the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last seen: {last!r})")


def screenshot(driver, name: str) -> None:
    """Save a screenshot as ``$LORSP_BROWSER_SCREENSHOTS/<name>.png`` when that variable names a folder."""
    folder = os.environ.get("LORSP_BROWSER_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


# the state of MathJax on a page: null until MathJax has started and typeset everything
MATHJAX_STATE = """
const mj = window.MathJax;
if (!mj || !mj.version || !mj.startup || !mj.startup.promise) return null;  // MathJax itself never loaded
if (!window.__lorspTypeset) {
  window.__lorspTypeset = 'waiting';
  mj.startup.promise.then(() => { window.__lorspTypeset = 'done'; },
                          error => { window.__lorspTypeset = 'failed: ' + error; });
}
if (window.__lorspTypeset === 'waiting') return null;
return {state: window.__lorspTypeset, version: mj.version,
        containers: document.querySelectorAll('mjx-container').length,
        display: document.querySelectorAll('mjx-container[display="true"]').length,
        errors: Array.from(document.querySelectorAll('mjx-merror, [data-mjx-error]')).map(e =>
            e.getAttribute('data-mjx-error') || e.textContent),
        text: document.body.innerText};
"""
RAW_TEX = ("\\frac", "\\tag", "\\begin{", "\\tau", "\\Theta", "\\(", "\\[", "$$")


def math_pages(html: Path) -> list[Path]:
    """The built pages that hold equations (Sphinx marks them with the class ``math``)."""
    return sorted(page for page in html.rglob("*.html")
                  if "_static" not in page.parts and 'class="math' in page.read_text(encoding="utf8", errors="replace"))


def check_equations_offline(html: Path, min_pages: int = 3) -> None:
    """Open every page of the built book ``html`` that holds equations from disk (file://) in headless Chromium
    with the network blocked, and check that MathJax - loaded from the build itself - typeset them all: no
    remote MathJax script, MathJax's output elements present (at least the page's display equations), no
    MathJax error, and no raw TeX (``\\frac``, ``\\tag``, ...) left in the visible text. LIF dynamics must
    show its Eqs. 1-3."""
    import re

    pages = math_pages(html)
    assert len(pages) >= min_pages, f"only {len(pages)} pages with equations in {html}: {pages}"
    assert any(page.name == "lif_dynamics.html" for page in pages), f"no LIF dynamics page with equations in {html}"
    driver = start_chromium(offline=True)
    try:
        for page in pages:
            text = page.read_text(encoding="utf8")
            scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', text, flags=re.I)
            assert scripts, f"{page.relative_to(html)} loads no MathJax script"
            for src in scripts:
                assert "://" not in src and not src.startswith("//"), \
                    f"{page.relative_to(html)} loads MathJax from the network: {src}"
                assert (page.parent / src.split("?")[0]).is_file(), f"{page.relative_to(html)}: {src} is not in the build"
            displayed = len(re.findall(r'<div class="math[^"]*"', text))
            driver.get(page.as_uri())
            state = wait_for(lambda: driver.execute_script(MATHJAX_STATE), 45,
                             f"MathJax to typeset {page.relative_to(html)} offline (opened from disk, no network)")
            where = page.relative_to(html)
            assert state["state"] == "done", f"{where}: MathJax {state['version']} {state['state']}"
            assert not state["errors"], f"{where}: MathJax could not typeset: {state['errors']}"
            assert state["containers"] > 0 and state["display"] >= displayed, \
                f"{where}: {state['containers']} typeset formulas, {state['display']} of {displayed} display equations"
            raw = [tex for tex in RAW_TEX if tex in state["text"]]
            assert not raw, f"{where}: raw TeX left in the visible text: {raw}"
            if page.name == "lif_dynamics.html":
                assert state["display"] >= 3, f"{where}: Eqs. 1-3 are not all typeset ({state['display']} display)"
                for number in ("(1)", "(2)", "(3)"):
                    assert number in state["text"], f"{where}: equation number {number} is not shown"
                # the equations carry the paper's numbers (\tag); a second, Sphinx-made number would confuse
                assert 'class="eqno"' not in text, f"{where}: an equation has a Sphinx number beside its own"
                screenshot(driver, "lif_dynamics-offline-equations")
    finally:
        driver.quit()
