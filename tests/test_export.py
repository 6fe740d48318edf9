"""The notebook is the single source of the book's code: every module must equal its export."""
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import export  # noqa: E402

NOTEBOOKS = export.chapter_notebooks(REPO)


def test_every_chapter_folder_has_a_notebook():
    chapters = sorted(p.name for p in REPO.iterdir() if p.is_dir() and re.match(r"(ch\d\d_|appendix_)", p.name))
    assert chapters, "no chapter folders found"
    assert [nb.parent.name for nb in NOTEBOOKS] == chapters


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_modules_match_notebook_export(nb):
    modules = export.export_notebook(nb)
    for module, text in modules.items():
        assert module.exists(), f"{module} is missing: run `python tools/export.py`"
        assert module.read_text(encoding="utf-8") == text, f"{module} differs from {nb}: run `python tools/export.py`"
        assert text.startswith(f"# Generated from {nb.parent.name}/{nb.name}")
    assert export.orphaned_modules(nb, modules) == [], "a generated module is no longer exported: run `python tools/export.py`"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_modules_stay_readable(nb):
    # One idea per module, as in minbpe and nanochat: a reader copies a file, not a chapter.
    for module, text in export.export_notebook(nb).items():
        n_lines = text.count("\n")
        assert n_lines <= 420, f"{module.name} has {n_lines} lines: split it into modules of one idea each"


def test_exporter_keeps_only_export_cells(tmp_path):
    folder = tmp_path / "ch99_demo"
    folder.mkdir()
    cell = lambda src: {"cell_type": "code", "source": src, "metadata": {}, "outputs": [], "execution_count": None}
    nb = {"cells": [cell("#| default_exp demo\nimport os"), cell("#| export\ndef f():\n    return 1"),
                    cell("print(f())"), {"cell_type": "markdown", "source": "#| export\ntext", "metadata": {}},
                    cell("#| export\n#| hide\nX = 2\n")],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (folder / "ch99_demo.ipynb").write_text(json.dumps(nb))
    [(module, text)] = export.export_notebook(folder / "ch99_demo.ipynb").items()
    assert module == folder / "demo.py"
    assert text.splitlines()[1:] == ["def f():", "    return 1", "", "", "X = 2"]


def test_exporter_routes_cells_to_named_modules(tmp_path):
    folder = tmp_path / "ch99_demo"
    folder.mkdir()
    cell = lambda src: {"cell_type": "code", "source": src, "metadata": {}, "outputs": [], "execution_count": None}
    nb = {"cells": [cell("#| export fetch\nA = 1"), cell("#| export clean\nB = 2"), cell("#| export fetch\nC = 3")],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = folder / "ch99_demo.ipynb"
    path.write_text(json.dumps(nb))
    modules = export.export_notebook(path)
    assert {m.name: t.splitlines()[1:] for m, t in modules.items()} == {
        "fetch.py": ["A = 1", "", "", "C = 3"], "clean.py": ["B = 2"]}
    # a module the notebook used to export, and no longer does, is reported as stale
    (folder / "old.py").write_text(export.header(path) + "X = 1\n")
    (folder / "hand_written.py").write_text("Y = 1\n")
    assert export.orphaned_modules(path, modules) == [folder / "old.py"]


def test_exporter_rejects_a_bad_module_name(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": "#| export my-module\nX = 1", "metadata": {}, "outputs": []}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "x.ipynb").write_text(json.dumps(nb))
    with pytest.raises(ValueError, match="not a valid module name"):
        export.export_notebook(tmp_path / "x.ipynb")


def test_exporter_rejects_a_bare_export_without_a_module_name(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": "#| export\nX = 1", "metadata": {}, "outputs": []}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "x.ipynb").write_text(json.dumps(nb))
    with pytest.raises(ValueError, match="default_exp"):
        export.export_notebook(tmp_path / "x.ipynb")


def test_every_chapter_is_in_the_test_paths():
    import tomllib

    testpaths = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["testpaths"]
    assert testpaths[0] == "tests"
    book_order = sorted((nb.parent.name for nb in NOTEBOOKS), key=lambda name: (name.startswith("appendix"), name))
    assert testpaths[1:] == book_order, "add the chapter folder to testpaths in pyproject.toml (appendices last)"
