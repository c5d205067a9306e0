"""Where ``lorsp`` looks for datasets and local weights: the *data root*.

Resolution order of :func:`data_root`:

1. the ``root`` argument (the CLI's ``--data-root`` / ``--root``);
2. the ``LORSP_DATA`` environment variable;
3. ``data/`` of the lorsp project checkout that contains the current directory: walking up from the current
   working directory to the first folder with a ``pyproject.toml`` whose project name is ``lorsp`` (so a
   notebook run from ``book/`` finds the repository's ``data/``);
4. ``data/`` beside the installed package when the package sits in a lorsp checkout (editable install);
5. ``./data`` of the current directory.

The data root is never created here; :func:`lorsp.data.import_data` creates it when it fills it.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "LORSP_DATA"
IMPORT_HINT = "lorsp data import PATH"

__all__ = ["data_root", "project_root", "ENV_VAR", "IMPORT_HINT"]


def _is_lorsp_project(folder: Path) -> bool:
    pyproject = folder / "pyproject.toml"
    if not pyproject.is_file():
        return False
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return 'name = "lorsp"' in pyproject.read_text(errors="replace")
    try:
        with pyproject.open("rb") as handle:
            return tomllib.load(handle).get("project", {}).get("name") == "lorsp"
    except (OSError, ValueError):
        return False


def project_root(start: str | os.PathLike | None = None) -> Path | None:
    """The lorsp checkout containing ``start`` (default: the current directory), else the checkout the package
    was imported from (editable install), else None."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if _is_lorsp_project(folder):
            return folder
    package_parent = Path(__file__).resolve().parents[2]
    if _is_lorsp_project(package_parent):
        return package_parent
    return None


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root as an absolute path (see the module docstring for the order of resolution)."""
    if root is not None and str(root) != "":
        return Path(root).expanduser().resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    project = project_root()
    if project is not None:
        return project / "data"
    return (Path.cwd() / "data").resolve()
