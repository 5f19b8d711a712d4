"""Where a user's data lives: a local path, or an object store's address (`s3://bucket/images`,
`gs://bucket/penguins.parquet`, `az://...`, `hdfs://...`: any address fsspec knows, as DVC's remotes use).

A table at an address is copied into the ingested snapshot, as a local one is. The images of a folder at
an address stay where they are: the manifest lists their addresses, and every reader of their bytes (the
fingerprint, validation's decoding, preprocess's) opens them through `open_binary`, on the driver or on a
data engine's workers. Credentials come from the store's usual places (for S3: the `AWS_*` variables,
`~/.aws`, the instance's role; `AWS_ENDPOINT_URL` for MinIO or another S3-compatible store).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import io
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TypeVar

from pipeline.core.errors import DataError
from pipeline.core.locations import OBJECT_STORE_PACKAGES, is_address

COPY_BLOCK_BYTES = 16 * 1024 * 1024
T = TypeVar("T")


def filesystem(address: str):
    """(the fsspec filesystem of `address`, the path within it), naming the package to install if missing."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(address)
    except ImportError as error:
        scheme = address.split("://", 1)[0]
        package = OBJECT_STORE_PACKAGES.get(scheme, f"the fsspec package for {scheme}://")
        raise DataError(
            f"{address}: reading {scheme}:// addresses needs {package}: pip install -e '.[cloud]'"
        ) from error
    except ValueError as error:  # an unknown scheme
        raise DataError(
            f"{address}: {error}; use a local path or an address fsspec knows (s3://, gs://, ...)"
        ) from error


@contextlib.contextmanager
def _access(address: str) -> Iterator[None]:
    """Turns the store's refusal into an error that names the address and the fix."""
    try:
        yield
    except PermissionError as error:
        raise DataError(
            f"{address}: the store refused access ({error}); check its credentials where this runs (for S3:"
            " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the machine's role; for GCS:"
            " GOOGLE_APPLICATION_CREDENTIALS) and that they may read it"
        ) from error


def open_binary(path: str | Path) -> IO[bytes]:
    """The file at a local path or an address, opened for reading bytes. A file at an address is read whole,
    in one request: from byte 0 on (without a range, s3fs first asks for the size: a second request)."""
    if not is_address(path):
        return open(path, "rb")
    store, location = filesystem(str(path))
    try:
        with _access(str(path)):
            try:
                return io.BytesIO(store.cat_file(location, start=0))
            except (FileNotFoundError, PermissionError):
                raise
            except OSError:  # an empty file has no byte 0 (S3: 416, range not satisfiable)
                return io.BytesIO(store.cat_file(location))
    except FileNotFoundError as error:
        raise DataError(
            f"{path}: no such file in the store; was it removed after `ingest`? Run `ingest` again."
        ) from error


READS_IN_FLIGHT = 16  # files of an object store read at once by one reader (each read waits tens of ms)


def map_files(function: Callable[[IO[bytes]], T], paths: Iterable[str]) -> Iterator[T]:
    """`function(the opened file)` for each file, in order. Files in an object store are read up to
    `READS_IN_FLIGHT` at a time, as each read waits for the store; local files one after another. An
    error is raised where its file comes in the order."""
    with concurrent.futures.ThreadPoolExecutor(READS_IN_FLIGHT) as pool:
        pending: collections.deque = collections.deque()
        for path in paths:
            if is_address(path):
                pending.append(pool.submit(_apply, function, path))
            else:
                pending.append(_run_now(function, path))
            while len(pending) >= READS_IN_FLIGHT or (pending and pending[0].done()):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def read_bytes(handle: IO[bytes]) -> bytes:
    return handle.read()


def _apply(function: Callable[[IO[bytes]], T], path: str) -> T:
    with open_binary(path) as handle:
        return function(handle)


def _run_now(function: Callable[[IO[bytes]], T], path: str) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    try:
        future.set_result(_apply(function, path))
    except Exception as error:  # raised by .result(), in its file's place in the order
        future.set_exception(error)
    return future


def copy_to_local(address: str, target: Path) -> Path:
    """Copies the file at `address` to the local `target`, in blocks (any size)."""
    store, location = filesystem(address)
    with _access(address):
        if not store.isfile(location):
            raise DataError(f"{address}: no such file; set data.path to your table's address (or a local path).")
        with store.open(location, "rb") as source, open(target, "wb") as destination:
            shutil.copyfileobj(source, destination, COPY_BLOCK_BYTES)
    return target


def list_class_folders(address: str) -> dict[str, list[str]]:
    """{class folder name: the addresses of its files, sorted}, for every non-hidden folder directly under
    `address` (`<address>/<class>/.../<file>`); hidden files and folders are skipped, as locally.

    Raises:
        DataError: if nothing is stored under `address`.
    """
    store, root = filesystem(address)
    with _access(address):
        return _class_folders(store, root.rstrip("/"), address)


def _class_folders(store, root: str, address: str) -> dict[str, list[str]]:
    if not store.isdir(root):
        raise DataError(f"{address}: no such folder; set data.path to a folder with one sub-folder per class.")
    classes: dict[str, list[str]] = {}
    for entry in store.ls(root, detail=True):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry["type"] == "directory" and not name.startswith("."):
            classes[name] = []
    for path in store.find(root, withdirs=False):
        if path.endswith("/"):  # a folder marker (an empty object that a console's "create folder" leaves)
            continue
        parts = path[len(root) :].strip("/").split("/")
        if len(parts) >= 2 and parts[0] in classes and not any(part.startswith(".") for part in parts[1:]):
            classes[parts[0]].append(path)
    return {  # sorted as a local folder's files are: by the parts of their paths
        name: [store.unstrip_protocol(path) for path in sorted(files, key=lambda path: path.split("/"))]
        for name, files in sorted(classes.items())
    }
