"""Write each chapter's module from its notebook's export cells.

The notebook is where the book's code is written. A code cell that opens with
the directive line ``#| export`` belongs to the chapter's module; one cell of the notebook names that
module with a line ``#| default_exp NAME`` (for example ``#| default_exp data`` in
``ch01_data/ch01_data.ipynb`` writes ``ch01_data/data.py``). The exported cells are
copied in notebook order, without their leading directive lines, below a header that
says the file is generated.

    python tools/export.py          # rewrite every chapter module
    python tools/export.py --check  # exit 1, listing the stale modules, if any differ
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXPORT = "#| export"
DEFAULT_EXP = "#| default_exp"


def chapter_notebooks(repo: Path = REPO) -> list[Path]:
    """The notebooks that carry a chapter's code: ``<chapter>/<chapter>.ipynb``."""
    return sorted(
        nb
        for folder in repo.iterdir()
        if folder.is_dir() and (folder.name.startswith("ch") or folder.name.startswith("appendix"))
        for nb in [folder / f"{folder.name}.ipynb"]
        if nb.exists()
    )


def _cell_lines(cell: dict) -> list[str]:
    source = cell.get("source", "")
    text = "".join(source) if isinstance(source, list) else source
    return text.splitlines()


def export_notebook(nb_path: Path) -> tuple[Path, str]:
    """Return (module path, module text) for one notebook; raise ValueError if it has none."""
    cells = [c for c in json.loads(nb_path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    names = [
        line[len(DEFAULT_EXP):].strip()
        for cell in cells
        for line in _cell_lines(cell)
        if line.startswith(DEFAULT_EXP)
    ]
    if len(names) != 1:
        raise ValueError(f"{nb_path}: expected exactly one '{DEFAULT_EXP} NAME' line, found {len(names)}")
    chunks = []
    for cell in cells:
        lines = _cell_lines(cell)
        n_directives = next((i for i, line in enumerate(lines) if not line.startswith("#|")), len(lines))
        if EXPORT in (line.strip() for line in lines[:n_directives]):
            chunks.append("\n".join(lines[n_directives:]).strip("\n"))
    if not chunks:
        raise ValueError(f"{nb_path}: no cell starts with '{EXPORT}'")
    rel = nb_path.relative_to(nb_path.parent.parent).as_posix()
    header = f"# Generated from {rel} by tools/export.py: edit the notebook, not this file.\n"
    return nb_path.parent / f"{names[0]}.py", header + "\n\n\n".join(chunks) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write text to a temporary file beside path, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="do not write; fail if a module is stale")
    args = parser.parse_args(argv)
    stale = []
    for nb in chapter_notebooks():
        module, text = export_notebook(nb)
        current = module.read_text(encoding="utf-8") if module.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(module.relative_to(REPO).as_posix())
        else:
            write_atomic(module, text)
            print(f"wrote {module.relative_to(REPO)}")
    if stale:
        print("stale modules (run `python tools/export.py`):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
