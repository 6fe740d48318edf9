"""What nbval cannot see: each notebook must be stored as one fresh, complete run that a reader can trust."""
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import export  # noqa: E402

NOTEBOOKS = export.chapter_notebooks(REPO)


def code_cells(nb_path: Path) -> list[dict]:
    cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
    return [c for c in cells if c["cell_type"] == "code" and "".join(c["source"]).strip()]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_stored_as_one_fresh_run(nb):
    counts = [c["execution_count"] for c in code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)), f"re-run {nb.name} top to bottom in a fresh kernel"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_every_figure_is_stored(nb):
    # A kernel started with MPLBACKEND=Agg draws nothing inline: the figures vanish from the page.
    for cell in code_cells(nb):
        if "plt.show()" in "".join(cell["source"]):
            kinds = {k for out in cell["outputs"] for k in out.get("data", {})}
            assert "image/png" in kinds, f"{nb.name}: cell {cell['execution_count']} shows a figure but stores none"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_no_local_paths_or_errors_in_outputs(nb):
    for cell in code_cells(nb):
        for out in cell["outputs"]:
            assert out["output_type"] != "error", f"{nb.name}: cell {cell['execution_count']} raised"
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            assert not re.search(r"(/work/|/home/|/root/|/tmp/|site-packages)", text), (
                f"{nb.name}: cell {cell['execution_count']} shows a path of the machine that ran it")
