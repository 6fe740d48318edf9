"""Write each chapter's modules from its notebook's export cells.

The notebook is where the book's code is written. A code cell that opens with the
directive line ``#| export NAME`` belongs to the chapter's module ``NAME.py``; a bare
``#| export`` goes to the notebook's default module, named once by a line
``#| default_exp NAME`` (for example ``#| default_exp pipeline`` in
``ch01_data/ch01_data.ipynb``). Each module's cells are copied in notebook order,
without their leading directive lines, below a header that says the file is generated.
A generated module that the notebook no longer exports is stale, and is deleted.

    python tools/export.py          # rewrite every chapter module
    python tools/export.py --check  # exit 1, listing the stale modules, if any differ

The exporter is the one piece of tooling that must run while a chapter's code is broken,
so it imports nothing from the chapters (its own small atomic write included).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXPORT = "#| export"
DEFAULT_EXP = "#| default_exp"
MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


def header(nb_path: Path) -> str:
    rel = nb_path.relative_to(nb_path.parent.parent).as_posix()
    return f"# Generated from {rel} by tools/export.py: edit the notebook, not this file.\n"


def export_notebook(nb_path: Path) -> dict[Path, str]:
    """{module path: module text} for one notebook; ValueError if it exports nothing or names a module badly."""
    cells = [c for c in json.loads(nb_path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    names = [line[len(DEFAULT_EXP):].strip() for cell in cells for line in _cell_lines(cell)
             if line.startswith(DEFAULT_EXP)]
    if len(names) > 1:
        raise ValueError(f"{nb_path}: expected at most one '{DEFAULT_EXP} NAME' line, found {len(names)}")
    default = names[0] if names else None
    chunks: dict[str, list[str]] = {}
    for cell in cells:
        lines = _cell_lines(cell)
        n_directives = next((i for i, line in enumerate(lines) if not line.startswith("#|")), len(lines))
        targets = [line.strip()[len(EXPORT):].strip() for line in lines[:n_directives]
                   if line.strip() == EXPORT or line.strip().startswith(EXPORT + " ")]
        for target in targets:
            module = target or default
            if module is None:
                raise ValueError(f"{nb_path}: a bare '{EXPORT}' cell needs a '{DEFAULT_EXP} NAME' line "
                                 f"(or write '{EXPORT} NAME')")
            if not MODULE_NAME.fullmatch(module):
                raise ValueError(f"{nb_path}: {module!r} is not a valid module name in '{EXPORT} {module}'")
            chunks.setdefault(module, []).append("\n".join(lines[n_directives:]).strip("\n"))
    if not chunks:
        raise ValueError(f"{nb_path}: no cell starts with '{EXPORT}'")
    return {nb_path.parent / f"{name}.py": header(nb_path) + "\n\n\n".join(parts) + "\n"
            for name, parts in chunks.items()}


def orphaned_modules(nb_path: Path, exported: dict[Path, str]) -> list[Path]:
    """Modules beside the notebook that say they were generated from it but are no longer exported."""
    first = header(nb_path)
    return sorted(p for p in nb_path.parent.glob("*.py")
                  if p not in exported and p.read_text(encoding="utf-8").startswith(first))


def write_atomic(path: Path, text: str) -> None:
    """Write text to a temporary file beside path, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; a module is an ordinary file
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
        modules = export_notebook(nb)
        for module, text in modules.items():
            current = module.read_text(encoding="utf-8") if module.exists() else None
            if current == text:
                continue
            if args.check:
                stale.append(module.relative_to(REPO).as_posix())
            else:
                write_atomic(module, text)
                print(f"wrote {module.relative_to(REPO)}")
        for orphan in orphaned_modules(nb, modules):
            if args.check:
                stale.append(f"{orphan.relative_to(REPO).as_posix()} (no longer exported)")
            else:
                orphan.unlink()
                print(f"deleted {orphan.relative_to(REPO)} (no longer exported)")
    if stale:
        print("stale modules (run `python tools/export.py`):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
