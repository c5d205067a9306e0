"""The book's sliders as a reader uses them: a live JupyterLab in headless Chromium.

For each chapter of book/ that builds a slider explorer (``lorsp.viz.slider_explorer``): start ``jupyter
lab`` on a free local port (token set, no browser, a temporary copy of the chapter as its root), open the
chapter, Run All Cells, then move every slider once with the keyboard (an arrow key on the focused slider
handle) and check that the figure under the sliders is replaced by a different one, and that it stays
one figure. nbmake cannot see this: it runs the cells, but no widget is ever drawn.

Skipped with the reason where no chromium/chromedriver or Selenium exists (tests/_browser.py). Screenshots of
every step are saved when ``LORSP_BROWSER_SCREENSHOTS`` names a folder.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from _browser import screenshot, skip_or_fail, start_chromium, missing_browser, wait_for

REPO = Path(__file__).resolve().parent.parent
CHAPTERS_WITH_SLIDERS = sorted(
    path for path in (REPO / "book").glob("*.ipynb")
    if any(cell.cell_type == "code" and ("slider_explorer" in cell.source or "widgets.interact" in cell.source)
           for cell in nbformat.read(path, as_version=4).cells))
RUN_ALL_TIMEOUT = 240     # s for Run All Cells of one chapter (the smoke scale runs in well under a minute)
REDRAW_TIMEOUT = 60       # s for one figure to be redrawn after a slider moved


def test_the_method_chapters_have_sliders():
    names = {path.stem for path in CHAPTERS_WITH_SLIDERS}
    assert {"lif_dynamics", "prompt_factorisation"} <= names, names


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving a temporary copy of the chapters with sliders; yields its URL
    and token. Its configuration, settings and workspaces live in the temporary folder too."""
    reason = missing_browser()
    if reason:
        skip_or_fail(reason)
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        skip_or_fail("jupyterlab is not installed (pip install -e '.[book]')")
    base = tmp_path_factory.mktemp("lab")
    root = base / "chapters"
    root.mkdir()
    for path in CHAPTERS_WITH_SLIDERS:
        shutil.copy(path, root / path.name)
    news = base / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')  # no "get notified about Jupyter news?" toast over the page
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "JUPYTER_CONFIG_DIR": str(base / "config"), "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"), "JUPYTER_RUNTIME_DIR": str(base / "runtime")}
    log = (base / "lab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--port={port}",
         "--port-retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--ServerApp.allow_root=True", "--LabApp.expose_app_in_browser=True",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up():
        if server.poll() is not None:
            pytest.fail(f"jupyter lab exited with {server.returncode}:\n{(base / 'lab.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(up, 90, f"jupyter lab to answer on {url}", interval=0.5)
        yield url, token, root
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started (its session)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()


NOTEBOOK_STATE = """
const app = window.jupyterapp;
const panel = app && app.shell.currentWidget;
if (!panel || !panel.content || !panel.sessionContext) return null;
const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
const cells = panel.content.widgets.filter(c => c.model.type === 'code');
const errors = [];
for (const cell of cells) {
  for (let i = 0; i < cell.model.outputs.length; i++) {
    const out = cell.model.outputs.get(i);
    if (out.type === 'error') errors.push(out.toJSON().ename + ': ' + out.toJSON().evalue);
  }
}
return {path: panel.context.path, kernel: kernel ? kernel.status : null, cells: cells.length,
        executed: cells.filter(c => c.model.executionCount !== null).length, errors: errors};
"""

# every slider explorer: a widget box holding sliders and an Output with the figure
EXPLORERS = """
return Array.from(document.querySelectorAll('.jp-OutputArea-output .widget-vbox')).filter(
  box => box.querySelector(':scope > .widget-slider') && box.querySelector(':scope > .widget-output'));
"""

FIGURE = """
const output = arguments[0].querySelector(':scope > .widget-output');
const images = output ? output.querySelectorAll('img') : [];
return {count: images.length, src: images.length ? images[images.length - 1].getAttribute('src') : null};
"""


def _run_all_cells(driver, url, token, name):
    driver.get(f"{url}/lab/tree/{name}?token={token}")
    state = wait_for(lambda: (lambda s: s if s and s["path"] == name and s["kernel"] == "idle" and s["cells"] else None)(
        driver.execute_script(NOTEBOOK_STATE)), 120, f"{name} to open with an idle kernel")
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")  # Run > Run All Cells

    def finished():
        s = driver.execute_script(NOTEBOOK_STATE)
        if s and s["errors"]:
            pytest.fail(f"{name}: a cell failed in JupyterLab: {s['errors']}")
        return s if s and s["executed"] == s["cells"] and s["kernel"] == "idle" else None

    time.sleep(1)
    wait_for(finished, RUN_ALL_TIMEOUT, f"Run All Cells of {name} to finish ({state['cells']} code cells)", interval=1)


@pytest.mark.parametrize("chapter", CHAPTERS_WITH_SLIDERS, ids=lambda p: p.stem)
def test_every_slider_redraws_its_figure_in_jupyterlab(lab, browser, chapter):
    from selenium.webdriver.common.keys import Keys

    url, token, _ = lab
    _run_all_cells(browser, url, token, chapter.name)
    explorers = wait_for(lambda: browser.execute_script(EXPLORERS), 60, f"the slider explorers of {chapter.name}")
    for e, explorer in enumerate(explorers):
        figure = wait_for(lambda: (lambda f: f if f["count"] else None)(browser.execute_script(FIGURE, explorer)),
                          REDRAW_TIMEOUT, f"the first figure of explorer {e} in {chapter.name}")
        sliders = explorer.find_elements("css selector", ":scope > .widget-slider")
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", explorer)
        screenshot(browser, f"{chapter.stem}-{e}-before")
        for s, slider in enumerate(sliders):
            label = slider.find_element("css selector", ".widget-label").text
            handle = slider.find_element("css selector", ".noUi-handle")
            at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
            before = figure["src"]
            browser.execute_script("arguments[0].focus();", handle)
            handle.send_keys(Keys.ARROW_LEFT if at_max else Keys.ARROW_RIGHT)

            def redrawn():
                now = browser.execute_script(FIGURE, explorer)
                return now if now["count"] and now["src"] != before else None

            figure = wait_for(redrawn, REDRAW_TIMEOUT,
                              f"the figure of {chapter.name} to change after moving slider {label!r} one step")
            assert figure["count"] == 1, (f"{chapter.name}: {figure['count']} figures under the sliders after moving "
                                          f"{label!r}: they pile up instead of being replaced")
            screenshot(browser, f"{chapter.stem}-{e}-after-{s}-{label}")
