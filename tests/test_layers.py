"""The package's layers (issue 26): ``lint-imports`` keeps the contracts of pyproject.toml ``[tool.importlinter]``
(imports only go down the layers; no import circles between the modules of one package), counting the imports
written inside functions; and ``lorsp/__init__.py`` imports from the method layer only."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is not installed (pip install -e '.[test]' brings it)")
import grimp  # noqa: E402  (installed with import-linter)

REPO = Path(__file__).resolve().parent.parent
#: what ``lorsp/__init__.py`` may import: the method layer (the bottom two layers of the contract)
METHOD_LAYER = ("lorsp.lif", "lorsp.quiet_logs", "lorsp.prompters", "lorsp.model")
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def _lint(project: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the ``lorsp`` package and the ``pyproject.toml`` of the folder ``project``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", LINT], cwd=project, env=env, capture_output=True, text=True,
                          timeout=300)


def test_lint_imports_keeps_the_layers_and_no_circles():
    result = _lint(REPO)
    assert result.returncode == 0, f"lint-imports found imports against the layers:\n{result.stdout}{result.stderr}"
    assert "Contracts: 2 kept, 0 broken." in result.stdout, result.stdout


def test_an_import_up_the_layers_inside_a_function_breaks_the_contract(tmp_path):
    """The check can fail: a copy of the package whose LIF neuron (the bottom layer) imports the experiments
    inside a function is refused, as is an import circle between two modules of lorsp.data."""
    shutil.copytree(REPO / "lorsp", tmp_path / "lorsp", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "lorsp" / "lif.py", "a", encoding="utf-8") as lif:
        lif.write("\n\ndef _upward():\n    from .experiments import grid\n    return grid\n")
    with open(tmp_path / "lorsp" / "data" / "root.py", "a", encoding="utf-8") as root:
        root.write("\n\ndef _circle():\n    from .registry import build_dataset\n    return build_dataset\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "lorsp.lif is not allowed to import lorsp.experiments" in result.stdout, result.stdout
    assert "No cycles are allowed in lorsp.data" in result.stdout, result.stdout


def test_the_package_init_imports_the_method_layer_only():
    graph = grimp.build_graph("lorsp", cache_dir=None)
    imported = graph.find_modules_directly_imported_by("lorsp")
    outside = sorted(m for m in imported if m.startswith("lorsp.")
                     and not any(m == layer or m.startswith(layer + ".") for layer in METHOD_LAYER))
    assert imported, "lorsp/__init__.py imports nothing of lorsp: the check looks at the wrong package"
    assert not outside, f"lorsp/__init__.py imports {outside}, outside the method layer {METHOD_LAYER}"
