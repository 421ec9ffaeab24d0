"""The example notebooks run top to bottom, offline, in smoke mode; they are stored without outputs.

Smoke mode (HF_COTMI_NOTEBOOK_SMOKE=1) swaps the Hub student for a tiny T5 saved to a temporary folder
(HF_COTMI_NOTEBOOK_MODEL) and uses a small slice of ../shared/data/dss (HF_COTMI_DATA_DIR). The kernel
is this interpreter, whatever Jupyter kernels the machine has registered.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import DSS_DATA

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# notebook -> (DSS dataset folders it needs, files it must leave in its output folder)
NOTEBOOKS = {
    "quickstart.ipynb": ((), []),
    "svamp_t5_hub.ipynb": (
        ("svamp",),
        ["t5-small-svamp-dssmi/README.md", "t5-small-svamp-dssmi/model.safetensors"],
    ),
    "lora_larger_student.ipynb": (("cqa",), ["flan-t5-large-cqa-lora/adapter_config.json"]),
    "calibration_analysis.ipynb": (
        ("esnli",),
        ["esnli-dss/reliability_test.png", "esnli-dss-mi/reliability_test.png"],
    ),
    "teacher_rationales.ipynb": ((), ["teacher-rationales/train.jsonl", "teacher-student/model.safetensors"]),
    "causal_student.ipynb": (
        ("svamp",),
        [
            "qwen-svamp-dssmi/README.md",
            "qwen-svamp-dssmi/model.safetensors",
            "qwen-svamp-dssmi/reliability_test.png",
        ],
    ),
}


@pytest.fixture(scope="module")
def kernel_dirs(tmp_path_factory) -> str:
    """A kernelspec folder whose python3 kernel is the interpreter running the tests."""
    folder = tmp_path_factory.mktemp("kernels")
    spec = folder / "python3"
    spec.mkdir()
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"})
    )
    return str(folder)


def test_notebooks_are_listed_and_stored_without_outputs():
    assert sorted(p.name for p in EXAMPLES.glob("*.ipynb")) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        notebook = nbformat.read(EXAMPLES / name, as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata.kernelspec.name == "python3"
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (name, cell.source[:60])
        sources = "\n".join(cell.source for cell in notebook.cells)
        assert "HF_COTMI_NOTEBOOK_SMOKE" in sources and "HF_COTMI_NOTEBOOK_MODEL" in sources


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(name, tiny_student_dir, kernel_dirs, tmp_path, monkeypatch):
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    needs, expected = NOTEBOOKS[name]
    missing = [folder for folder in needs if not (DSS_DATA / folder).is_dir()]
    if missing:
        pytest.skip(f"needs {missing} under {DSS_DATA}")
    for key, value in {
        "HF_COTMI_NOTEBOOK_SMOKE": "1",
        "HF_COTMI_NOTEBOOK_MODEL": tiny_student_dir,
        "HF_COTMI_DATA_DIR": str(DSS_DATA),
        "HF_COTMI_NOTEBOOK_OUTPUT": str(tmp_path / "outputs"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "Agg",
    }.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    manager = KernelManager(
        kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernel_dirs])
    )
    client = NotebookClient(
        notebook, km=manager, timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and the traceback, if a cell fails

    printed = [
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    ]
    assert any("smoke run: True" in text for text in printed)
    for relative in expected:
        assert (tmp_path / "outputs" / relative).is_file(), relative
