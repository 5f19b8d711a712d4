"""Where things live: object-store addresses, the project's root and a SQLite tracking store's file.

No TensorFlow, no MLflow: the configuration checks use these before anything heavy is imported.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# data.path in an object store: the fsspec package that reads each scheme (`pip install -e '.[cloud]'`)
OBJECT_STORE_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
_ADDRESS = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]+://")


def is_address(path) -> bool:
    """Whether `path` is an object store's address (`scheme://...`), not a local path."""
    return isinstance(path, str) and _ADDRESS.match(path) is not None


def sqlite_file(uri: str) -> Path | None:
    """The file of a `sqlite:///PATH[?options]` tracking URI; None for any other store."""
    return Path(uri.removeprefix("sqlite:///").partition("?")[0]) if uri.startswith("sqlite:///") else None


def project_root() -> Path:
    """The repository the user works in: DVC's `DVC_ROOT` (set for every stage, and pointing at the
    user's repository, not the temporary copy, in queued and `--temp` experiments), else the current folder."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()
