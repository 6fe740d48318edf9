"""A reader who ran only `pip install -r requirements.txt` can run every notebook and every chapter module.

Every import in every notebook cell and chapter module, and every `version("...")` a notebook
prints, must be provided by requirements.txt or by what its packages install in turn; the
test requirements (requirements-dev.txt) do not count, since the Quickstart never installs them.
"""
import ast
import json
import re
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import export  # noqa: E402

PROJECT = {p.name for p in REPO.iterdir() if p.is_dir() and re.match(r"(ch\d\d_|appendix_)", p.name)}


def requirement_names(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(canonicalize_name(Requirement(line).name))
    return names


def installed_closure(names: list[str]) -> set[str]:
    """The distributions that installing `names` brings in: each one's dependencies, recursively (no extras)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue  # listed but not installed here: its own dependencies cannot be read
        for spec in map(Requirement, requires):
            if spec.marker is None or spec.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(spec.name))
    return seen


READER = installed_closure(requirement_names(REPO / "requirements.txt"))
MODULE_TO_DISTS = {module: {canonicalize_name(d) for d in dists} for module, dists in packages_distributions().items()}


def imported_modules(source: str) -> set[str]:
    tree = ast.parse(source)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def versions_asked(source: str) -> set[str]:
    return set(re.findall(r"""\bversion\(\s*["']([A-Za-z0-9_.\-]+)["']\s*\)""", source))


def notebook_source(nb: Path) -> str:
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    # IPython magics and shell escapes are not Python
    return "\n".join("\n".join(l for l in cell.splitlines() if not l.lstrip().startswith(("%", "!"))) for cell in code)


SOURCES = {nb.relative_to(REPO).as_posix(): nb for nb in export.chapter_notebooks(REPO)}
SOURCES.update({py.relative_to(REPO).as_posix(): py for folder in sorted(PROJECT) for py in sorted((REPO / folder).glob("*.py"))})


def test_the_checker_sees_the_packages():
    assert "torch" in READER and "tiktoken" in READER
    assert "datasketch" not in READER, "datasketch only checks our MinHash in the tests; a reader does not need it"
    assert MODULE_TO_DISTS["numpy"] == {"numpy"}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_import_is_installed_by_requirements_txt(name):
    path = SOURCES[name]
    source = notebook_source(path) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")
    missing = []
    for module in sorted(imported_modules(source)):
        if module in sys.stdlib_module_names or module in PROJECT or module == "__future__":
            continue
        dists = MODULE_TO_DISTS.get(module)
        if not dists or not dists & READER:
            missing.append(f"import {module} (from {', '.join(sorted(dists or {'an unknown distribution'}))})")
    for dist in sorted(versions_asked(source)):
        if canonicalize_name(dist) not in READER:
            missing.append(f'version("{dist}")')
    assert not missing, (f"{name} needs what requirements.txt does not install: {'; '.join(missing)}. "
                         "Add the package to requirements.txt, or do without it in that cell.")
