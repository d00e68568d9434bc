"""The notebooks run top to bottom (on a CPU: small sizes, Triton kernels interpreted) and are committed with outputs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_mxfp4_format.ipynb", "02_kernels_and_roofline.ipynb", "03_gpt_oss.ipynb"]
CELL_TIMEOUT_S = 600
# What each notebook must show once run: its checks passed (text that only appears on success).
EXPECTED = {
    "01_mxfp4_format.ipynb": ["3.76x smaller", "scale bytes: [255, 0, 0]"],
    "02_kernels_and_roofline.ipynb": ["hopper     exact   exact   exact", "largest error"],
    "03_gpt_oss.ipynb": ["identical continuations: True", "same next-token argmax everywhere: True"],
}
FORBIDDEN = ["DIFFERS", "TOO LARGE", "Traceback"]


def text_of(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif output.output_type == "error":
                parts.append(f"{output.ename}: {output.evalue}")
            elif "text/plain" in output.get("data", {}):
                parts.append(output.data["text/plain"])
    return "\n".join(parts)


@pytest.mark.parametrize("name", NAMES)
def test_committed_with_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{name} has no code"
    unexecuted = [i for i, cell in enumerate(code) if cell.execution_count is None]
    assert not unexecuted, f"{name}: code cells {unexecuted} were committed without being run"
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), f"{name} was not run top to bottom"
    assert any(o.output_type == "display_data" for cell in code for o in cell.outputs) or name == "03_gpt_oss.ipynb", (
        f"{name}: its plots are missing from the committed outputs"
    )
    text = text_of(notebook)
    for marker in EXPECTED[name]:
        assert marker in text, f"{name}: committed outputs lack {marker!r}"


@pytest.mark.parametrize("name", NAMES)
def test_runs_top_to_bottom(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    executed = copy.deepcopy(notebook)
    client = nbclient.NotebookClient(executed, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError naming the cell on any failure
    text = text_of(executed)
    for marker in EXPECTED[name]:
        assert marker in text, f"{name}: output lacks {marker!r}:\n{text[-3000:]}"
    for marker in FORBIDDEN:
        assert marker not in text, f"{name}: output contains {marker!r}:\n{text[-3000:]}"
