"""Outputs written safely: what a run killed mid-write leaves beside an output is removed by the next run
that writes it; what a live run or another host is writing, and any finished output, is never touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.core.outputs import (
    LEGACY_AGE_SECONDS,
    host_id,
    replace_directory,
    scratch_directory,
    staged_directory,
    sweep_stale,
    write_text_atomic,
)

ROOT = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def hidden(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def test_a_staging_folder_of_a_killed_process_is_removed_by_the_next_run(tmp_path):
    """A real SIGKILL while the child builds `prepared` in its staging folder."""
    target = tmp_path / "prepared"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from pipeline.core.outputs import scratch_directory\n"
            "with scratch_directory(Path(sys.argv[1]), 'prepared') as scratch:\n"
            "    (scratch / 'out').mkdir()\n"
            "    (scratch / 'out' / 'shard-00000.tfrecord').write_bytes(b'x' * 1000)\n"
            "    print('writing', flush=True)\n"
            "    time.sleep(60)\n",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "writing"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    left = hidden(tmp_path)
    assert len(left) == 1 and left[0].startswith(f".prepared-{host_id()}-{child.pid}-"), left

    with scratch_directory(tmp_path, "prepared") as scratch:
        (scratch / "out").mkdir()
        (scratch / "out" / "spec.json").write_text("{}")
        replace_directory(scratch / "out", target)
    assert hidden(tmp_path) == []
    assert [path.name for path in target.iterdir()] == ["spec.json"]


def test_what_a_live_process_or_another_host_writes_is_kept(tmp_path):
    other_host = "0" * 8 if host_id() != "0" * 8 else "1" * 8
    live = tmp_path / f".prepared-{host_id()}-{os.getpid()}-abcd1234"
    remote = tmp_path / f".prepared-{other_host}-{dead_pid()}-abcd1234"
    other_output = tmp_path / f".prepared-v2-{host_id()}-{dead_pid()}-abcd1234"  # `prepared-v2`'s, not ours
    for folder in (live, remote, other_output):
        folder.mkdir()
    assert sweep_stale(tmp_path, "prepared") == []
    assert sweep_stale(tmp_path, "prepared-v2") == [other_output]
    assert hidden(tmp_path) == sorted([live.name, remote.name])


def test_staging_of_earlier_versions_is_removed_once_an_hour_old(tmp_path):
    old, recent = tmp_path / ".prepared-k2j4_x9q", tmp_path / ".spec.json-0abcdefg"
    old.mkdir()
    recent.write_text("{")
    an_hour_ago = time.time() - LEGACY_AGE_SECONDS - 10
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert sweep_stale(tmp_path, "prepared") == [old]
    assert sweep_stale(tmp_path, "spec.json") == []
    assert recent.exists()


def test_a_killed_atomic_write_leaves_a_temporary_file_that_the_next_write_removes(tmp_path):
    target = tmp_path / "summary.json"
    write_text_atomic(target, "old")
    stale = tmp_path / f".summary.json-{host_id()}-{dead_pid()}-ab12cd34"
    stale.write_text("half")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert hidden(tmp_path) == []


def test_an_output_moved_aside_by_a_killed_replace_is_put_back(tmp_path):
    """Killed between moving the old output aside and moving the new one in: the old one comes back
    (nothing replaced it); killed just after the new one is in place: the old one goes."""
    target = tmp_path / "validated"
    aside = tmp_path / f".validated.old-{host_id()}-{dead_pid()}"
    aside.mkdir()
    (aside / "data.parquet").write_text("old data")
    with scratch_directory(tmp_path, "validated"):
        pass
    assert (target / "data.parquet").read_text() == "old data"
    assert hidden(tmp_path) == []

    aside.mkdir()
    assert sweep_stale(tmp_path, "validated") == [aside]
    assert (target / "data.parquet").read_text() == "old data"


def test_a_staged_folder_replaces_the_output_only_when_its_block_ends_without_an_error(tmp_path):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "old.txt").write_text("old")
    try:
        with staged_directory(target) as staging:
            (staging / "half.txt").write_text("half")
            raise RuntimeError("the stage failed")
    except RuntimeError:
        pass
    assert sorted(path.name for path in target.iterdir()) == ["old.txt"]
    with staged_directory(target) as staging:
        assert list(staging.iterdir()) == [], "the block starts from an empty folder"
        (staging / "new.txt").write_text("new")
        assert (target / "old.txt").exists(), "nothing is replaced before the block ends"
    assert sorted(path.name for path in target.iterdir()) == ["new.txt"]
    assert hidden(tmp_path) == [], "no staging folder is left beside it"
