"""Data at an address, on fsspec's in-memory store (`memory://`, no server): folders list as on disk, files
are read in order with several reads in flight, and errors (nothing there, no reader, access refused) name
the address and the fix."""

from __future__ import annotations

import re
import threading
import time

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from pipeline.core.errors import DataError
from pipeline.data import sources, storage


@pytest.fixture
def store():
    memory = fsspec.filesystem("memory")
    memory.store.clear()
    yield memory
    memory.store.clear()


def test_a_folder_at_an_address_lists_as_the_same_folder_on_disk(store, tmp_path):
    files = {"cat/1.png": b"a", "cat/sub dir/2.png": b"b", "cat/.hidden.png": b"c", "dog/ü+%.png": b"d"}
    files.update({"cat/.cache/3.png": b"e", ".thumbs/4.png": b"f", "notes.txt": b"g"})
    for name, content in files.items():
        store.pipe(f"/images/{name}", content)
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    at_address, classes = sources.scan_image_dir("memory://images")
    on_disk, disk_classes = sources.scan_image_dir(tmp_path)
    assert classes == disk_classes == ["cat", "dog"]
    assert at_address["path"].tolist() == [  # fsspec's form of the addresses: the in-memory store's root is /
        "memory:///images/cat/1.png",
        "memory:///images/cat/sub dir/2.png",
        "memory:///images/dog/ü+%.png",
    ]
    assert [path.removeprefix("memory:///images/") for path in at_address["path"]] == [
        path.removeprefix(f"{tmp_path}/") for path in on_disk["path"]
    ]
    assert at_address["label"].tolist() == on_disk["label"].tolist()
    assert sources.fingerprint_files(at_address["path"].tolist()) == sources.fingerprint_files(on_disk["path"].tolist())


def test_files_are_read_in_order_with_reads_in_flight_and_an_error_in_its_place(store, tmp_path):
    local = tmp_path / "local.png"
    local.write_bytes(b"local")
    for index in range(40):
        store.pipe(f"/files/{index}", str(index).encode())
    paths = [f"memory://files/{index}" for index in range(20)] + [str(local)]
    paths += [f"memory://files/{index}" for index in range(20, 40)]
    at_once, most = [0], [0]
    lock = threading.Lock()

    def slow_read(handle) -> bytes:
        with lock:
            at_once[0] += 1
            most[0] = max(most[0], at_once[0])
        time.sleep(0.02)
        with lock:
            at_once[0] -= 1
        return handle.read()

    contents = list(storage.map_files(slow_read, paths))
    assert contents == [str(index).encode() for index in range(20)] + [b"local"] + [
        str(index).encode() for index in range(20, 40)
    ]
    assert 1 < most[0] <= storage.READS_IN_FLIGHT

    read = storage.map_files(storage.read_bytes, ["memory://files/0", "memory://files/gone", "memory://files/1"])
    assert next(read) == b"0"
    with pytest.raises(DataError, match="memory://files/gone: no such file in the store"):
        next(read)


def test_an_address_without_its_reader_or_with_nothing_there_is_a_clear_error(store):
    with pytest.raises(DataError, match="no such folder; set data.path"):
        sources.scan_image_dir("memory://nothing-here")
    with pytest.raises(DataError, match="no such file; set data.path"):
        storage.copy_to_local("memory://missing.csv", "unused.csv")
    with pytest.raises(DataError, match="use a local path or an address fsspec knows"):
        storage.open_binary("nosuchscheme://bucket/file.png")


class RefusingStore(MemoryFileSystem):
    """A store that answers every request with 403, as S3 does to wrong or missing credentials."""

    protocol = "refusing"

    def _refuse(self, *args, **kwargs):
        raise PermissionError("Access Denied")

    ls = info = isdir = isfile = cat_file = find = _open = _refuse


def test_a_store_that_refuses_access_is_a_clear_error_that_names_the_credentials(tmp_path):
    fsspec.register_implementation("refusing", RefusingStore, clobber=True)
    credentials = "the store refused access (Access Denied); check its credentials"
    with pytest.raises(DataError, match=r"refusing://bucket/images: " + re.escape(credentials)):
        sources.scan_image_dir("refusing://bucket/images")
    with pytest.raises(DataError, match=r"refusing://bucket/a.png: " + re.escape(credentials)):
        list(storage.map_files(storage.read_bytes, ["refusing://bucket/a.png"]))
    with pytest.raises(DataError, match=r"refusing://bucket/t.csv: " + re.escape(credentials)):
        storage.copy_to_local("refusing://bucket/t.csv", tmp_path / "t.csv")
    assert not (tmp_path / "t.csv").exists()
