"""The CI workflows (retraining, and the tests on pull requests), checked offline: GitHub's workflow
schema, zizmor's audit, and that each hands its work to the one script (so the same job runs locally)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "retrain.yml"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).is_file():
        pytest.fail(f"{name} is missing: install the dev extra (pip install -e '.[dev]')")
    return found


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_the_workflow_matches_github_s_schema(workflow):
    completed = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_zizmor_finds_no_security_problem(workflow):
    completed = subprocess.run([tool("zizmor"), "--offline", str(workflow)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_a_broken_workflow_is_caught_by_the_same_checks(tmp_path):
    broken = tmp_path / "broken.yml"
    text = WORKFLOW.read_text()
    broken.write_text(text.replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest"))
    schema = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(broken)], capture_output=True
    )
    assert schema.returncode != 0
    unsafe = tmp_path / "unsafe.yml"
    unsafe.write_text(text.replace("run: .ci/retrain", 'run: .ci/retrain "${{ inputs.recent_data }}"'))
    assert subprocess.run([tool("zizmor"), "--offline", str(unsafe)], capture_output=True).returncode != 0


def test_the_workflow_triggers_and_delegates_to_the_script():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as a boolean
    assert {"schedule", "push", "workflow_dispatch"} <= set(triggers)
    assert {"**.dvc", "dvc.lock"} <= set(triggers["push"]["paths"])
    steps = workflow["jobs"]["retrain"]["steps"]
    runs = [step["run"] for step in steps if "run" in step]
    assert runs == [".ci/retrain"]
    script = (ROOT / ".ci" / "retrain").read_text()
    assert "exec pipeline retrain" in script and (ROOT / ".ci" / "retrain").stat().st_mode & 0o111


def test_pull_requests_run_the_projects_ci_entry_point():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())
    assert {"pull_request", "push"} <= set(workflow[True])
    runs = [step["run"] for step in workflow["jobs"]["test"]["steps"] if "run" in step]
    assert runs == ["bash .ci/run"]
