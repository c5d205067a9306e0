"""The book's frame: committed notebooks carry no outputs, the table of contents and book/ agree, the
configuration reaches no network, citations resolve, and the book builds with warnings as errors."""
import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
BOOK = REPO / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
PAGES = sorted(BOOK.glob("*.md"))
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def _config() -> dict:
    return yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf8"))


def _toc_files() -> list[str]:
    """Every document named in _toc.yml (root included), as paths relative to the repo without suffix."""
    from sphinx_external_toc.parsing import parse_toc_yaml

    site_map = parse_toc_yaml(REPO / "_toc.yml")
    return sorted(site_map)


def _source_of(docname: str) -> Path | None:
    for suffix in (".ipynb", ".md"):
        path = REPO / f"{docname}{suffix}"
        if path.is_file():
            return path
    return None


# ---------------------------------------------------------------------------------------------------------
# notebooks as committed
# ---------------------------------------------------------------------------------------------------------
def test_book_has_notebooks():
    assert NOTEBOOKS, "book/ holds no notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (
        f"{path.relative_to(REPO)}: code cells {dirty} have outputs or execution counts; commit notebooks "
        f"without them: jupyter nbconvert --clear-output --inplace {path.relative_to(REPO)}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_with_a_python_kernel(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", (
        f"{path.relative_to(REPO)}: metadata.kernelspec.name must be 'python3' (nbmake and the build run it)")


def _shows_something(source: str) -> bool:
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    tree = ast.parse("\n".join(lines))
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        return True
    names = {node.func.id for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    return bool(names & {"print", "display"})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_shows_something(path):
    """The build's execution mode is "auto": a notebook in which one code cell has no output is executed
    again by `jupyter-book build`. So every code cell must end with an expression or print/display."""
    nb = nbformat.read(path, as_version=4)
    silent = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        try:
            shows = _shows_something(cell.source)
        except SyntaxError as error:
            pytest.fail(f"{path.relative_to(REPO)}: code cell {i} does not parse: {error}")
        if not shows:
            silent.append(i)
    assert not silent, (f"{path.relative_to(REPO)}: code cells {silent} end without an expression, print() or "
                        f"display(); they would leave no output and make the book build execute the notebook again")


# ---------------------------------------------------------------------------------------------------------
# table of contents
# ---------------------------------------------------------------------------------------------------------
def test_every_toc_entry_exists():
    missing = [doc for doc in _toc_files() if _source_of(doc) is None]
    assert not missing, f"_toc.yml lists documents that do not exist (as .ipynb or .md): {missing}"


def test_every_book_page_is_in_the_toc():
    listed = set(_toc_files())
    stray = [str(p.relative_to(REPO)) for p in NOTEBOOKS + PAGES if str(p.relative_to(REPO).with_suffix("")) not in listed]
    assert not stray, f"pages in book/ that _toc.yml does not list (only_build_toc_files skips them): {stray}"


def test_toc_has_the_four_parts_and_the_method_chapters():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf8"))
    assert toc["format"] == "jb-book" and toc["root"] == "book/intro"
    captions = [part["caption"] for part in toc["parts"]]
    assert captions == ["Introduction", "Method", "Experiments", "Appendix"]
    chapters = {part["caption"]: [c["file"] for c in part["chapters"]] for part in toc["parts"]}
    assert chapters["Method"] == ["book/lif_dynamics", "book/prompt_factorisation", "book/parameter_counting"]
    assert set(chapters["Experiments"]) == {f"book/{n}" for n in (
        "sparsifiers", "backbones", "downstream", "ood", "hyperparameters", "prompt_gallery")}


# ---------------------------------------------------------------------------------------------------------
# configuration: offline, executes only what has no outputs
# ---------------------------------------------------------------------------------------------------------
def _strings(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, path + (str(key),))
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, path)
    elif isinstance(value, str):
        yield path, value


def test_config_reaches_no_network():
    config = _config()
    sphinx_config = (config.get("sphinx") or {}).get("config") or {}
    assert not sphinx_config.get("intersphinx_mapping"), "intersphinx fetches inventories over the network"
    extensions = (config.get("sphinx") or {}).get("extra_extensions") or []
    # sphinx-mathjax-offline copies MathJax into the build (it is what makes the equations render offline)
    assert set(extensions) <= {"sphinx-mathjax-offline"}, f"extra Sphinx extensions: check they are offline: {extensions}"
    assert "mathjax_path" not in sphinx_config or "://" not in str(sphinx_config["mathjax_path"])
    remote = [(".".join(path), text) for path, text in _strings(config)
              if re.search(r"https?://", text) and path[0] not in ("launch_buttons", "repository")]
    assert not remote, f"_config.yml names remote resources: {remote}"
    for key in ("html_js_files", "html_css_files"):
        for item in sphinx_config.get(key, []) or []:
            assert "://" not in str(item), f"{key} loads a remote asset: {item}"
    assert sphinx_config.get("nb_ipywidgets_js") == {}, "ipywidgets' CDN scripts must stay off"


def test_config_execution_and_sources():
    config = _config()
    assert config["execute"]["execute_notebooks"] == "auto"
    assert config["execute"]["timeout"] >= 600
    assert config["only_build_toc_files"] is True
    for extension in ("dollarmath", "amsmath"):
        assert extension in config["parse"]["myst_enable_extensions"]
    for bib in config["bibtex_bibfiles"]:
        assert (REPO / bib).is_file(), f"bibtex_bibfiles names a missing file: {bib}"


def test_every_citation_is_in_the_bibliography():
    from pybtex.database import parse_file

    keys = set(parse_file(str(BOOK / "references.bib")).entries)
    used = {}
    for path in NOTEBOOKS + PAGES:
        if path.suffix == ".ipynb":
            text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
        else:
            text = path.read_text(encoding="utf8")
        for group in CITE.findall(text):
            for key in group.split(","):
                used.setdefault(key.strip(), path.name)
    unknown = {key: where for key, where in used.items() if key not in keys}
    assert not unknown, f"citations with no entry in book/references.bib: {unknown}"
    assert "lorsp2026" in used, "the book must cite the paper it reproduces"


# ---------------------------------------------------------------------------------------------------------
# the build
# ---------------------------------------------------------------------------------------------------------
# folders of environments and caches a reader may have in the checkout, each holding a Markdown file that fails
# the build if Sphinx reads it (a README whose first heading is H3, as in real packages' READMEs)
FOREIGN_FOLDERS = (".venv/lib/python3.11/site-packages/cuda/pathfinder", "venv/lib/python3.11/site-packages/pkg",
                   "env/lib/pkg", ".tox/py311/lib/pkg", "node_modules/pkg", "book/.ipynb_checkpoints")
BAD_MARKDOWN = "### A package README whose headings start at H3\n\nSphinx warns: Document headings start at H3.\n"


@pytest.fixture(scope="module")
def offline_build(tmp_path_factory):
    """The book built from a copy of its sources (config, toc, book/) with execution off (the notebooks' code
    is checked by nbmake) and warnings as errors, beside a `.venv`, `venv`, `env`, `.tox` and `node_modules`
    that each hold a Markdown file with a bad heading: returns ``(completed process, html folder)``."""
    if shutil.which("jupyter-book") is None:
        pytest.skip("jupyter-book is not installed (pip install -e '.[book]')")
    missing = [doc for doc in _toc_files() if _source_of(doc) is None]
    if missing:
        pytest.skip(f"toc entries missing (reported by test_every_toc_entry_exists): {missing}")
    base = tmp_path_factory.mktemp("book")
    source = base / "source"
    shutil.copytree(BOOK, source / "book", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "_build"))
    shutil.copy(REPO / "_toc.yml", source / "_toc.yml")
    config = _config()
    config["execute"]["execute_notebooks"] = "off"
    (source / "_config.yml").write_text(yaml.safe_dump(config), encoding="utf8")
    for folder in FOREIGN_FOLDERS:
        (source / folder).mkdir(parents=True, exist_ok=True)
        (source / folder / "README.md").write_text(BAD_MARKDOWN, encoding="utf8")
    result = subprocess.run(
        ["jupyter-book", "build", str(source), "--config", str(source / "_config.yml"), "--toc",
         str(source / "_toc.yml"), "--path-output", str(base / "out"), "--warningiserror", "--nitpick",
         "--keep-going"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return result, base / "out" / "_build" / "html"


def test_book_builds_with_warnings_as_errors(offline_build):
    """Warnings as errors: a broken link, toc entry, citation, directive or equation fails here, and so does a
    Markdown file of a virtual environment or cache in the checkout that the build reads (`.venv` is hidden,
    so `only_build_toc_files` does not cover it: `exclude_patterns` must)."""
    result, html = offline_build
    log = result.stdout + result.stderr
    assert result.returncode == 0, "jupyter-book build failed:\n" + log[-6000:]
    assert (html / "book" / "lif_dynamics.html").is_file(), log[-3000:]
    read = sorted(str(page.relative_to(html)) for page in html.rglob("README.html"))
    assert not read, f"the build rendered Markdown of environment folders it does not own: {read}"


def test_equations_render_offline(offline_build):
    """Every page with equations, opened from disk in a browser with no network, shows them typeset by the
    MathJax copied into the build (tests/test_rendered.py checks the real build the same way)."""
    from _browser import check_equations_offline

    result, html = offline_build
    if result.returncode != 0:
        pytest.skip("the book did not build (reported by test_book_builds_with_warnings_as_errors)")
    check_equations_offline(html)
