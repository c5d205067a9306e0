"""Every experiment chapter's tables and verdicts on the committed ``desk`` records are the ones of the
snapshot ``tests/data/chapter_outputs.json`` (written from the code before the chapters became a registry:
``python tests/_chapter_outputs.py``): numbers, labels and verdicts only, never whole records."""
from __future__ import annotations

import json
import math

import pytest

from _chapter_outputs import REPO, SNAPSHOT, all_outputs


def _differences(expected, got, path="") -> list[str]:
    """Where ``got`` differs from ``expected`` (floats to 1e-7 relative), one line per place, the path named."""
    if isinstance(expected, dict) and isinstance(got, dict):
        out = [f"{path}/{k}: missing" for k in expected if k not in got]
        out += [f"{path}/{k}: not in the snapshot" for k in got if k not in expected]
        for key in expected.keys() & got.keys():
            out += _differences(expected[key], got[key], f"{path}/{key}")
        return out
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return [f"{path}: {len(got)} items, the snapshot has {len(expected)}"]
        return [line for i, (e, g) in enumerate(zip(expected, got)) for line in _differences(e, g, f"{path}[{i}]")]
    if isinstance(expected, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return [] if math.isclose(expected, got, rel_tol=1e-7, abs_tol=1e-9) else [f"{path}: {got!r} != {expected!r}"]
    return [] if expected == got else [f"{path}: {got!r} != {expected!r}"]


@pytest.fixture(scope="module")
def outputs():
    if not (REPO / "results" / "desk").is_dir():
        pytest.skip("no committed desk records under results/desk")
    return json.loads(json.dumps(all_outputs()))   # the snapshot's JSON types (tuples → lists)


def test_every_chapter_shows_what_the_snapshot_shows(outputs):
    expected = json.loads(SNAPSHOT.read_text())
    differences = _differences(expected, outputs)
    assert not differences, f"{len(differences)} differences from {SNAPSHOT.name}:\n" + "\n".join(differences[:40])


def test_the_snapshot_covers_every_chapter_with_verdicts():
    expected = json.loads(SNAPSHOT.read_text())
    assert set(expected["chapters"]) == {"backbones", "downstream", "ood", "sparsifiers", "hyperparameters",
                                         "prompt_gallery"}
    for chapter in ("backbones", "downstream", "ood", "sparsifiers", "hyperparameters"):
        assert expected["chapters"][chapter]["verdicts"] and expected["chapters"][chapter]["table"], chapter
    assert expected["ledger"]


def test_a_changed_verdict_is_named():
    expected = {"c": {"verdicts": ["a holds"], "table": [{"x": 1.0}]}}
    assert _differences(expected, {"c": {"verdicts": ["a is reversed"], "table": [{"x": 1.0}]}}) == [
        "/c/verdicts[0]: 'a is reversed' != 'a holds'"]
    assert _differences(expected, {"c": {"verdicts": ["a holds"], "table": [{"x": 1.1}]}}) == [
        "/c/table[0]/x: 1.1 != 1.0"]
