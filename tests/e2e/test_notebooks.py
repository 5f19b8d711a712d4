"""The notebooks run top to bottom against a real (tiny) pipeline run, for images and for a table."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT, make_dvc_project, run

pytestmark = pytest.mark.e2e

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def execute(notebook: Path, project: Path) -> nbformat.NotebookNode:
    document = nbformat.read(notebook, as_version=4)
    NotebookClient(
        document, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(project)}}
    ).execute()
    return document


def outputs_text(document: nbformat.NotebookNode) -> str:
    return "\n".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in document.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


def test_notebooks_are_committed_without_outputs():
    assert [path.name for path in NOTEBOOKS] == [
        "01_explore_data.ipynb",
        "02_compare_runs.ipynb",
        "03_error_analysis.ipynb",
    ]
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = make_dvc_project(tmp_path_factory.mktemp("notebooks"))
    run(["dvc", "repro"], project)
    return project


def test_notebooks_run_on_an_image_dataset(project):
    explored = outputs_text(execute(ROOT / "notebooks/01_explore_data.ipynb", project))
    assert "digits" in explored and "examples" in explored
    compared = outputs_text(execute(ROOT / "notebooks/02_compare_runs.ipynb", project))
    assert "1 pipeline run(s)" in compared and "best by test_accuracy" in compared
    errors = outputs_text(execute(ROOT / "notebooks/03_error_analysis.ipynb", project))
    assert "test accuracy" in errors and "most confident" in errors and "macro avg" in errors


def test_notebooks_run_on_a_table_after_a_second_experiment(project):
    run(["dvc", "exp", "run", "-S", "data.source=penguins"], project)
    explored = outputs_text(execute(ROOT / "notebooks/01_explore_data.ipynb", project))
    assert "penguins" in explored and "missing fraction" in explored
    compared = outputs_text(execute(ROOT / "notebooks/02_compare_runs.ipynb", project))
    assert "2 pipeline run(s)" in compared and "penguins" in compared
    errors = outputs_text(execute(ROOT / "notebooks/03_error_analysis.ipynb", project))
    assert "island" in errors and "accuracy" in errors
