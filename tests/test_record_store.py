"""The one record store (issue 26, item 2): every reader and writer of run records goes through
lorsp.experiments.store; a page parses each record once; no private name is imported across modules."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from lorsp import results
from lorsp.experiments import store as store_module
from lorsp.experiments.store import RecordStore, read_run_record

REPO = Path(__file__).resolve().parents[1]
DESK = REPO / "results" / "desk"


def _committed_folder(tmp_path) -> Path:
    source = next(p.parent for p in sorted(DESK.glob("*/record.json")))
    target = tmp_path / "desk" / source.name
    shutil.copytree(source, target)
    return target


def test_the_store_names_reads_and_writes_a_runs_record(tmp_path):
    run = {"dataset": "cifar10", "backbone": "mobilenetv2", "method": "none", "seed": 0, "tags": {"label": "LP"}}
    store = RecordStore(tmp_path)
    assert store.get(run) is None and not store.is_final(run) and store.keys() == []
    with pytest.raises(FileNotFoundError, match=store.key(run)):
        store.read(run)
    path = store.write(run, {"config": {"seed": 0}, "status": "completed", "final_accuracy": 0.5,
                             "run_dir": "/home/someone/runs/x"})
    assert path == tmp_path / store.key(run) / "record.json"
    record = store.read(run)
    assert record["final_accuracy"] == 0.5 and store.is_final(run) and store.keys() == [store.key(run)]
    assert record.get("run_dir") is None   # written in the portable form: no path of the training machine


def test_a_reader_gets_its_own_copy(tmp_path):
    folder = _committed_folder(tmp_path)
    first = read_run_record(folder / "record.json")
    first["final_accuracy"] = -1.0
    first.setdefault("experiment", {})["shifted"] = {"noise": 0.0}
    again = read_run_record(folder / "record.json")
    assert again["final_accuracy"] != -1.0 and "noise" not in ((again.get("experiment") or {}).get("shifted") or {})


def test_a_changed_record_is_read_again(tmp_path):
    folder = _committed_folder(tmp_path)
    path = folder / "record.json"
    before = read_run_record(path)
    changed = {**before, "final_accuracy": 0.123456, "note": "changed on disk"}
    path.write_text(json.dumps(changed, indent=2))
    assert read_run_record(path)["final_accuracy"] == 0.123456


def test_a_page_parses_each_record_once(monkeypatch):
    """The findings page (every chapter's claims, the ledger, the health of every record) reads each record
    file once, however many tables ask for it."""
    from lorsp.experiments import findings
    from lorsp.experiments.ledger import build_ledger
    parsed: dict[str, int] = {}
    original = results.parse_record_file

    def counting(path):
        parsed[str(Path(path).resolve())] = parsed.get(str(Path(path).resolve()), 0) + 1
        return original(path)

    monkeypatch.setattr(results, "parse_record_file", counting)
    monkeypatch.setattr(store_module, "_PARSED", {})
    findings()
    build_ledger()
    assert len(parsed) >= 50, f"the page read only {len(parsed)} records"
    twice = {path: count for path, count in parsed.items() if count > 1}
    assert not twice, f"{len(twice)} records parsed more than once, e.g. {sorted(twice.items())[:3]}"


def test_reading_a_table_does_not_go_through_the_trainer(monkeypatch):
    from lorsp.experiments import grid, records, runner
    monkeypatch.setattr(runner, "run_grid", lambda *a, **k: pytest.fail("collect went through run_grid"))
    frame = records.collect(grid("backbones", "desk"), DESK)
    assert len(frame) > 0 and frame.attrs["trained"] == 0 and frame.attrs["reused"] > 0


def _private_imports(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(package.parent)}:{node.lineno}: {alias.name}")
    return found


def test_no_private_name_is_imported_across_modules():
    assert _private_imports(REPO / "lorsp") == []
