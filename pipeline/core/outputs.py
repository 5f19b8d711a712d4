"""Writing outputs safely: never leave a half-written file or folder behind.

Outputs are built under a hidden name beside their final place and renamed into it. The hidden names say
which process made them (`.<name>-<host>-<pid>-<random>`), so that when a run is killed mid-write (SIGKILL,
out of memory, a power cut) the next run that writes the same output removes what it left: folders and
files of a process of this host that no longer runs. Those of a live process (a concurrent run) or of
another host sharing the folder are never touched.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.core.processes import process_running

log = logging.getLogger(__name__)

_RANDOM = r"[a-z0-9_]{8}"  # the random part of `tempfile`'s names
LEGACY_AGE_SECONDS = 3600  # staging of earlier versions (no owner in the name) is swept after an hour


@functools.cache
def host_id() -> str:
    """8 hex digits naming this host (its name, hashed: names may hold any character)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _owner() -> str:
    return f"{host_id()}-{os.getpid()}"


def _is_stale(match: re.Match, entry: os.DirEntry) -> bool:
    """Left by a process of this host that no longer runs, or (names of earlier versions, with no owner)
    older than `LEGACY_AGE_SECONDS`."""
    if match["host"] is None:
        return time.time() - entry.stat(follow_symlinks=False).st_mtime > LEGACY_AGE_SECONDS
    return match["host"] == host_id() and not process_running(int(match["pid"]))


@contextlib.contextmanager
def scratch_directory(parent: Path, name: str) -> Iterator[Path]:
    """A new empty folder `<parent>/.<name>-<owner>-<random>`, removed with what it holds on exit.

    First sweeps what killed runs left for the same name (`sweep_stale`). To build an output folder, use
    `staged_directory(target)`, which stages it in one of these.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(parent, name)
    with tempfile.TemporaryDirectory(dir=parent, prefix=f".{name}-{_owner()}-") as folder:
        yield Path(folder)


def sweep_stale(parent: Path, name: str) -> list[Path]:
    """Removes the staging of `<parent>/<name>` that killed runs of this host left; returns what it removed.

    An old output moved aside by a `replace_directory` that was killed before the new one was in place is
    put back where it was when nothing replaced it, so no output is lost.
    """
    parent = Path(parent)
    owner = r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)"
    staging = re.compile(rf"\.{re.escape(name)}-(?:{owner}-)?{_RANDOM}")
    moved_aside = re.compile(rf"\.{re.escape(name)}\.old-(?:{owner}|\d+)")
    try:
        entries = sorted(os.scandir(parent), key=lambda entry: entry.name)
    except FileNotFoundError:
        return []
    removed = []
    for entry in entries:
        path = Path(entry.path)
        if (match := moved_aside.fullmatch(entry.name)) is not None and _is_stale(match, entry):
            target = parent / name
            if not target.exists():
                os.replace(path, target)
                log.warning("%s was moved aside by a run that was killed; put back in place", target)
                continue
        elif (match := staging.fullmatch(entry.name)) is None or not _is_stale(match, entry):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.info(
            "removed %d unfinished output(s) that killed runs left beside %s: %s",
            len(removed),
            parent / name,
            ", ".join(path.name for path in removed),
        )
    return removed


def replace_directory(staging: Path, target: Path) -> None:
    """Moves the finished folder `staging` to `target`, replacing what was there.

    The old folder is moved aside first and removed only after the new one is in place,
    so a crash leaves either the old or the new complete folder (the next `scratch_directory`
    for `target` puts an old one back if nothing replaced it).
    """
    staging, target = Path(staging), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{_owner()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


CORRUPT_PREFIX = "corrupt-"


@contextlib.contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """Builds the output folder `target` out of sight: yields an empty folder beside it which, when the block
    ends without an error, replaces `target` (`replace_directory`). An error or a kill leaves the old `target`."""
    target = Path(target)
    with scratch_directory(target.parent, target.name) as scratch:
        staging = scratch / "out"
        staging.mkdir()
        yield staging
        replace_directory(staging, target)


def set_aside(path: Path, what: str, error: BaseException, then: str) -> Path:
    """Renames unreadable state `path` to `corrupt-<name>-<time>` beside it (kept for inspection, never
    deleted silently) and says so in one warning line: `<what> <path> is unreadable (<error>); ... <then>`."""
    path = Path(path)
    aside = path.with_name(f"{CORRUPT_PREFIX}{path.name}-{int(time.time())}")
    path.rename(aside)
    reason = str(error).splitlines()[0][:200] if str(error) else ""
    log.warning(
        "%s %s is unreadable (%s: %s); set aside as %s, %s", what, path, type(error).__name__, reason, aside.name, then
    )
    return aside


def write_text_atomic(path: Path, text: str) -> Path:
    """Writes `text` to a temporary file beside `path`, then renames it into place (first sweeping the
    temporary files of killed runs: `sweep_stale`)."""
    return _write_atomic(path, text, "w")


def write_bytes_atomic(path: Path, data: bytes, sweep: bool = True) -> Path:
    """`write_text_atomic` for bytes. `sweep=False` skips the sweep, for many files in a folder that is
    itself swept as a whole (a `scratch_directory`)."""
    return _write_atomic(path, data, "wb", sweep)


def _write_atomic(path: Path, content: str | bytes, mode: str, sweep: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if sweep:
        sweep_stale(path.parent, path.name)
    with tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f".{path.name}-{_owner()}-", delete=False) as handle:
        handle.write(content)
        temporary = Path(handle.name)
    os.chmod(temporary, 0o666 & ~_umask())  # NamedTemporaryFile makes 0600 files; give the usual mode
    os.replace(temporary, path)
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json_atomic(path: Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_to_builtin) + "\n")


def _to_builtin(value: Any) -> Any:
    """json.dumps fallback for numpy scalars and arrays."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
