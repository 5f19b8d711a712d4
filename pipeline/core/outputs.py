"""Writing outputs safely: never leave a half-written file or folder behind."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def replace_directory(staging: Path, target: Path) -> None:
    """Moves the finished folder `staging` to `target`, replacing what was there.

    The old folder is moved aside first and removed only after the new one is in place,
    so a crash leaves either the old or the new complete folder.
    """
    staging, target = Path(staging), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


CORRUPT_PREFIX = "corrupt-"


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
    """Writes `text` to a temporary file beside `path`, then renames it into place."""
    return _write_atomic(path, text, "w")


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """`write_text_atomic` for bytes."""
    return _write_atomic(path, data, "wb")


def _write_atomic(path: Path, content: str | bytes, mode: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f".{path.name}-", delete=False) as handle:
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
