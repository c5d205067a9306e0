"""The rendered book as a reader gets it: the pages that `jupyter-book build .` wrote to _build/html.

- Equations render offline: every page with equations, opened from disk in a browser with no network, is
  typeset by the MathJax inside the build (tests/_browser.py).
- No machine path and no stray return value: no page shows this checkout's absolute path, the data root's
  (``LORSP_DATA``) or a ``/tmp/`` path, and no cell output shows a Python repr such as ``<matplotlib...>``,
  ``Text(...)`` or a widget's ``VBox(...)``.
- The slider explorers show their figure at the default values (the page has no kernel for the widget).

These tests need the real build, which executes the chapters. The first `pytest` of .ci/run runs before the
build and skips them ("run after jupyter-book build"); .ci/run runs this file again after the build with
``LORSP_REQUIRE_BUILT_HTML=1``, which turns a missing build into a failure. Locally: build, then
``pytest tests/test_rendered.py``. (A stale _build/html is tested as it is: rebuild first.)
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from _browser import check_equations_offline

REPO = Path(__file__).resolve().parent.parent
HTML = REPO / "_build" / "html"
SLIDER_CHAPTERS = ("lif_dynamics", "prompt_factorisation")
# Python reprs that leak when a cell ends with a matplotlib or widget call instead of a figure or a table
STRAY_REPRS = re.compile(r"<matplotlib\.|\bText\(|<Figure size|\bLine2D\(|<Axes:|\bAxesSubplot\b|<AxesSubplot|"
                         r"\bVBox\(|\bHBox\(|\binteractive\(children|\bSliderExplorer\(|<IPython\.core")
# a library's log line (torch's glog format: ``W1202 05:59:47.589000 25568 file.py:183] ...``) in a cell output
LOG_LINES = re.compile(r"\b[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]")


@pytest.fixture(scope="module")
def html() -> Path:
    if not (HTML / "book" / "lif_dynamics.html").is_file():
        if os.environ.get("LORSP_REQUIRE_BUILT_HTML") == "1":
            pytest.fail(f"LORSP_REQUIRE_BUILT_HTML=1 but there is no built book in {HTML}")
        pytest.skip("no built book in _build/html: run after `jupyter-book build .` "
                    "(.ci/run runs tests/test_rendered.py again after the build)")
    return HTML


def _pages(html: Path) -> list[Path]:
    return sorted(p for p in html.rglob("*.html") if "_static" not in p.relative_to(html).parts)


def _machine_paths() -> list[str]:
    paths = {str(REPO), str(REPO.resolve()), "/tmp/"}
    data = os.environ.get("LORSP_DATA")
    if data and os.path.isabs(data):
        paths |= {data.rstrip("/"), str(Path(data).resolve())}
    return sorted(paths)


def test_equations_render_offline_in_the_built_book(html):
    check_equations_offline(html)


def test_no_page_shows_a_machine_path(html):
    """The pages and the notebooks offered for download (_sources) name no folder of this machine."""
    found = {}
    files = _pages(html) + sorted((html / "_sources").rglob("*.ipynb"))
    for page in files:
        text = page.read_text(encoding="utf8", errors="replace")
        for path in _machine_paths():
            for match in re.finditer(re.escape(path), text):
                snippet = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text[max(0, match.start() - 100):match.end() + 80]))
                found.setdefault(str(page.relative_to(html)), []).append(f"{path!r} in …{snippet}…")
    assert files and not found, "machine paths in the rendered book:\n" + "\n".join(
        f"{page}: {hits[:3]}" for page, hits in found.items())


def _cell_outputs_matching(html: Path, pattern: re.Pattern) -> dict[str, list[str]]:
    """Page → the cell-output snippets around each match of ``pattern``, over every built page."""
    from bs4 import BeautifulSoup

    found = {}
    for page in _pages(html):
        soup = BeautifulSoup(page.read_text(encoding="utf8"), "html.parser")
        for output in soup.select("div.cell_output"):
            text = output.get_text(" ")
            for match in pattern.finditer(text):
                found.setdefault(str(page.relative_to(html)), []).append(
                    text[max(0, match.start() - 40):match.end() + 80])
    return found


def test_no_cell_output_is_a_stray_repr(html):
    """A cell that ends in `ax.set_title(...)` or a widget shows its return value (`Text(0.5, 1.0, '...')`);
    the book shows figures and tables, never such reprs."""
    found = _cell_outputs_matching(html, STRAY_REPRS)
    assert not found, "Python reprs shown as cell outputs:\n" + "\n".join(f"{p}: {hits[:3]}" for p, hits in found.items())


def test_no_cell_output_is_a_library_log_line(html):
    """A library that logs on import (torch's inductor: "No CUDA runtime is found") writes into the output of
    the cell that first imports it; a reader should see the chapter's results, not the machine's logs."""
    found = _cell_outputs_matching(html, LOG_LINES)
    assert not found, "log lines shown as cell outputs:\n" + "\n".join(f"{p}: {hits[:2]}" for p, hits in found.items())


@pytest.mark.parametrize("chapter", SLIDER_CHAPTERS)
def test_slider_explorers_show_their_figure_in_the_static_book(html, chapter):
    from bs4 import BeautifulSoup

    soup = BeautifulSoup((html / "book" / f"{chapter}.html").read_text(encoding="utf8"), "html.parser")
    cells = [cell for cell in soup.select("div.cell") if "slider_explorer" in cell.select_one("div.cell_input").get_text()]
    assert cells, f"{chapter}.html: no cell calls slider_explorer"
    for cell in cells:
        output = cell.select_one("div.cell_output")
        images = output.select("img") if output is not None else []
        assert len(images) == 1, f"{chapter}.html: the slider cell shows {len(images)} images, expected its figure"
        assert images[0].get("src", "").endswith(".png"), images[0]
    assert not soup.select('script[type="application/vnd.jupyter.widget-view+json"]'), \
        f"{chapter}.html embeds a widget view that cannot render without a kernel"
