"""The chapter registry (lorsp.experiments.chapters): every experiment chapter is one registered module,
and no code outside those modules branches on a chapter's name."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from lorsp.experiments import CHAPTERS, RUN_ORDER
from lorsp.experiments.chapters import REGISTRY, Chapter, chapter

PACKAGE = Path(__file__).resolve().parents[1] / "lorsp"


def test_every_chapter_the_runner_trains_is_registered():
    assert set(RUN_ORDER) == set(REGISTRY) == set(CHAPTERS)
    for name in REGISTRY:
        assert isinstance(chapter(name), Chapter) and chapter(name).name == name


def test_an_unknown_chapter_is_named_with_the_registered_ones():
    with pytest.raises(KeyError, match=r"unknown chapter 'tables'.*backbones"):
        chapter("tables")


def test_a_chapter_without_a_table_or_claims_says_which_have_them():
    with pytest.raises(KeyError, match=r"'prompt_gallery' has no side-by-side table.*backbones"):
        chapter("prompt_gallery").table({})
    with pytest.raises(KeyError, match=r"'prompt_gallery' has no claims.*sparsifiers"):
        chapter("prompt_gallery").claims(pd.DataFrame(), None, 0.5, 0.95, "accuracy_pct")


def test_only_the_ood_chapter_tests_on_shifted_sets():
    assert [n for n, c in REGISTRY.items() if c.shifted_test_sets] == ["ood"]


def test_no_code_outside_the_chapter_modules_branches_on_a_chapter_name():
    pattern = re.compile(r"chapter\s*(==|!=|in\s*\()")
    offending = [f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
                 for path in PACKAGE.rglob("*.py")
                 if "chapters" not in path.relative_to(PACKAGE).parts
                 for number, line in enumerate(path.read_text().splitlines(), start=1) if pattern.search(line)]
    assert not offending, "\n".join(offending)


def test_a_page_shows_every_section_on_the_committed_desk_records(monkeypatch):
    """A chapter page without training (no smoke runs): the headline from results/desk, the table beside
    the paper, the verdicts, every run, the loss curves, the training-length check, the collapsed runs and the
    smoke check."""
    import matplotlib
    matplotlib.use("Agg")
    from lorsp.experiments import runs_dir, scale_setup
    from lorsp.experiments.chapters import ChapterPage
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *items, **_: shown.extend(items))
    backbones = chapter("backbones")
    page = ChapterPage(backbones, "smoke", scale_setup("smoke", require_data=False), [], runs_dir("smoke"))
    page.headline()
    if not page.evidence.from_committed:
        pytest.skip("no complete committed desk records of the backbones chapter")
    from lorsp.experiments import grid
    from lorsp.experiments.scales import desk_setup
    assert page.best_scale == "desk"
    assert len(page.best) == len(grid("backbones", setup=desk_setup(require_data=False)))   # a row per run and label
    page.ours = page.best.assign(scale="smoke")   # stands in for this page's smoke runs
    html = page.side_by_side("caption").to_html()
    assert "paper (reported, %)" in html and "ours · desk (%)" in html
    page.verdicts()
    assert page.sentences and not page.claim_table.empty
    assert "seed" in page.every_run().to_html()
    page.loss_curves()
    page.training_length()
    assert any("Has the training loss flattened?" in getattr(item, "caption", "") or "" for item in shown
               if hasattr(item, "caption"))
    page.collapsed_runs()   # the committed desk v2 records hold collapsed LoRSP seeds
    assert any("collapsed seeds' prompts have" in getattr(item, "data", "") for item in shown)
    assert page.smoke_check() is not None


EXPERIMENT_NOTEBOOKS = ("backbones", "sparsifiers", "downstream", "ood", "hyperparameters", "prompt_gallery")


def _code_windows(notebook: Path, size: int = 3) -> set[tuple[str, ...]]:
    """Every run of ``size`` consecutive code lines of a notebook (stripped; blank lines and comments left out)."""
    import json
    windows = set()
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "code":
            continue
        lines = [line.strip() for line in "".join(cell["source"]).splitlines()
                 if line.strip() and not line.strip().startswith("#")]
        windows |= {tuple(lines[i:i + size]) for i in range(len(lines) - size + 1)}
    return windows


def test_the_experiment_notebooks_share_no_copied_block_of_three_lines():
    """What every chapter does lives in lorsp.experiments.chapters (ChapterPage), not in copies of cells."""
    book = Path(__file__).resolve().parents[1] / "book"
    seen: dict[tuple[str, ...], str] = {}
    copied = []
    for name in EXPERIMENT_NOTEBOOKS:
        for window in _code_windows(book / f"{name}.ipynb"):
            if window in seen and seen[window] != name:
                copied.append(f"{seen[window]} and {name}: {' / '.join(window)}")
            seen.setdefault(window, name)
    assert not copied, "\n".join(copied)
