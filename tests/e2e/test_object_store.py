"""Data in a bucket (`data.path: s3://...`), against a real S3 API: moto's server on 127.0.0.1 (a stand-in
for the cloud bucket this machine cannot reach), reached the way a user's AWS setup is (`AWS_*` variables).

An image folder in the bucket gives the data the same folder on disk gives, byte for byte, with its
images read from the bucket by Apache Beam's workers; a table in the bucket is snapshotted by `ingest`,
and `dvc repro` (with dvc-s3) reruns when an object changes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT, make_dvc_project, run, write_params

pytest.importorskip("s3fs")
pytest.importorskip("apache_beam")
pytestmark = pytest.mark.e2e

BUCKET = "data"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def digits_folder(root: Path) -> Path:
    """300 of the digits as PNG class folders, with what users' folders hold: a nested folder, hidden files,
    a name with accents, spaces and URL-special characters."""
    from pipeline.data.sources import write_digits_images

    everything = write_digits_images(root.parent / "all-digits")
    for file in sorted(everything.rglob("*.png")):
        if int(file.stem) < 300:
            (root / file.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(file, root / file.parent.name / file.name)
    nested = root / "3" / "second scan"
    nested.mkdir()
    for file in sorted((root / "3").glob("*.png"))[:5]:
        file.rename(nested / file.name)
    (root / "4" / "0004.png").rename(root / "4" / "été #4+%.png")
    (root / "3" / ".DS_Store").write_bytes(b"\0\0")
    (root / ".thumbnails").mkdir()
    (root / ".thumbnails" / "0.png").write_bytes(b"not a class")
    return root


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """moto's S3 server with the digits folder under `images/` and the penguins CSV under `tables/`; the
    environment (endpoint, credentials) is this process's and its children's while the module runs."""
    import boto3
    from moto.server import ThreadedMotoServer

    from pipeline.data.sources import write_penguins_csv

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = dict(os.environ)
    os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=f"http://{host}:{port}")
    try:
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        local = digits_folder(tmp_path_factory.mktemp("disk") / "images")
        for file in sorted(local.rglob("*")):
            if file.is_file():
                client.upload_file(str(file), BUCKET, f"images/{file.relative_to(local).as_posix()}")
        for marker in ("images/", "images/3/", "images/3/second scan/"):  # what a console's "create folder" leaves
            client.put_object(Bucket=BUCKET, Key=marker, Body=b"")
        table = write_penguins_csv(tmp_path_factory.mktemp("table") / "penguins.csv")
        client.upload_file(str(table), BUCKET, "tables/penguins.csv")
        yield {"client": client, "images": local, "table": table}
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


def prepare(folder: Path, data: dict) -> dict:
    """A suite profiled from the data, then ingest, validate and preprocess, in a fresh project folder; what
    must not depend on where the data is."""
    (folder / "data" / "feedback").mkdir(parents=True)
    shutil.copytree(ROOT / "expectations", folder / "expectations")
    write_params(folder, {"data": data, "preprocess": {"shard_size": 64}})
    logs = {"profile": run([sys.executable, "-m", "pipeline", "validate", "--profile"], folder).stderr}
    for name in ("ingest", "validate", "preprocess"):
        logs[name] = run([sys.executable, "-m", "pipeline", "run", name], folder).stderr
    summary = json.loads((folder / "reports" / "validate" / "summary.json").read_text())
    summary.pop("seconds", None)
    prepared = folder / "data" / "prepared"
    return {
        "fingerprint": json.loads((folder / "data" / "ingested" / "source.json").read_text())["fingerprint"],
        "manifest": pd.read_parquet(folder / "data" / "validated" / "manifest.parquet"),
        "summary": summary,
        "prepared": {path.name: path.read_bytes() for path in sorted(prepared.iterdir())},
        "logs": logs,
    }


def test_an_image_folder_in_a_bucket_gives_the_data_of_the_same_folder_on_disk(bucket, tmp_path):
    disk = prepare(tmp_path / "disk", {"source": "image_dir", "path": str(bucket["images"])})
    store = prepare(
        tmp_path / "bucket",
        {"source": "image_dir", "path": f"s3://{BUCKET}/images", "engine": "beam", "engine_workers": 2},
    )
    for name in ("ingest", "validate", "preprocess"):  # the bucket's images were read by Beam's workers
        assert "task(s) on Apache Beam" in store["logs"][name], store["logs"][name][-3000:]
    assert store["manifest"]["path"].str.startswith(f"s3://{BUCKET}/images/").all()
    relative = disk["manifest"]["path"].map(lambda path: Path(path).relative_to(bucket["images"]).as_posix())
    assert store["manifest"]["path"].tolist() == (f"s3://{BUCKET}/images/" + relative).tolist()
    assert {"3/second scan/0003.png", "4/été #4+%.png"} <= set(relative) and not relative.str.contains(r"^\.|/\.").any()
    assert len(disk["manifest"]) == 300
    disk_summary, store_summary = dict(disk["summary"]), dict(store["summary"])
    assert disk_summary.pop("suite").endswith("images.yaml") and store_summary.pop("suite").endswith("images.yaml")
    assert store_summary == disk_summary
    assert store["fingerprint"] == disk["fingerprint"]
    assert store["prepared"].keys() == disk["prepared"].keys() and len(store["prepared"]) > 3
    for name, content in disk["prepared"].items():
        assert store["prepared"][name] == content, name


def test_a_table_in_a_bucket_is_snapshotted_and_dvc_reruns_when_the_object_changes(bucket, tmp_path):
    address = f"s3://{BUCKET}/tables/penguins.csv"
    project = make_dvc_project(tmp_path, {"data": {"source": "csv", "path": address, "label": "species"}})
    run(["dvc", "repro", "validate"], project)
    snapshot = project / "data" / "ingested" / "source.csv"
    assert snapshot.read_bytes() == bucket["table"].read_bytes()
    assert "up to date" in run(["dvc", "status", "validate"], project).stdout

    table = pd.read_csv(bucket["table"]).iloc[:300]
    bucket["client"].put_object(Bucket=BUCKET, Key="tables/penguins.csv", Body=table.to_csv(index=False).encode())
    status = run(["dvc", "status", "ingest"], project).stdout
    assert "changed deps" in status and address in status, status
    run(["dvc", "repro", "validate"], project)
    assert len(pd.read_csv(snapshot)) == 300
    assert json.loads((project / "reports" / "validate" / "summary.json").read_text())["rows"] == 300


def test_dvc_reruns_ingest_when_an_image_in_the_bucket_folder_changes(bucket, tmp_path):
    address = f"s3://{BUCKET}/changing"
    for name in ("0/0000.png", "1/0001.png"):
        bucket["client"].upload_file(str(bucket["images"] / name), BUCKET, f"changing/{name}")
    project = make_dvc_project(tmp_path, {"data": {"source": "image_dir", "path": address}})
    run(["dvc", "repro", "ingest"], project)
    fingerprint = json.loads((project / "data" / "ingested" / "source.json").read_text())["fingerprint"]
    assert "up to date" in run(["dvc", "status", "ingest"], project).stdout

    bucket["client"].upload_file(str(bucket["images"] / "0/0010.png"), BUCKET, "changing/1/0001.png")
    status = run(["dvc", "status", "ingest"], project).stdout
    assert "changed deps" in status and address in status, status
    run(["dvc", "repro", "ingest"], project)
    assert json.loads((project / "data" / "ingested" / "source.json").read_text())["fingerprint"] != fingerprint


def test_a_missing_folder_object_or_reader_is_a_clear_error(bucket, tmp_path):
    folder = tmp_path / "project"
    (folder / "data" / "feedback").mkdir(parents=True)
    shutil.copytree(ROOT / "expectations", folder / "expectations")
    write_params(folder, {"data": {"source": "image_dir", "path": f"s3://{BUCKET}/no-such-folder"}})
    failed = run([sys.executable, "-m", "pipeline", "run", "ingest"], folder, check=False)
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert f"s3://{BUCKET}/no-such-folder: no such folder" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not (folder / "data" / "ingested").exists()

    for name in ("0/0000.png", "0/0010.png", "1/0001.png", "1/0011.png"):  # an image removed after ingest
        bucket["client"].upload_file(str(bucket["images"] / name), BUCKET, f"few/{name}")
    write_params(folder, {"data": {"source": "image_dir", "path": f"s3://{BUCKET}/few"}})
    run([sys.executable, "-m", "pipeline", "validate", "--profile"], folder)
    run([sys.executable, "-m", "pipeline", "run", "ingest"], folder)
    bucket["client"].delete_object(Bucket=BUCKET, Key="few/1/0011.png")
    failed = run([sys.executable, "-m", "pipeline", "run", "validate"], folder, check=False)
    assert failed.returncode == 2, failed.stderr[-3000:]
    message = f"s3://{BUCKET}/few/1/0011.png: no such file in the store; was it removed after `ingest`?"
    assert message in failed.stderr and "Traceback" not in failed.stderr
    assert not (folder / "data" / "validated").exists()

    from pipeline.data import storage  # an empty object has no byte 0 to read from (S3 answers 416)

    bucket["client"].put_object(Bucket=BUCKET, Key="empty.png", Body=b"")
    assert storage.open_binary(f"s3://{BUCKET}/empty.png").read() == b""

    write_params(folder, {"data": {"source": "csv", "path": "gs://bucket/table.csv", "label": "y"}})
    failed = run([sys.executable, "-m", "pipeline", "run", "ingest"], folder, check=False)
    if importlib_available("gcsfs"):
        pytest.skip("gcsfs is installed here: the missing-reader error cannot be shown")
    assert failed.returncode != 0 and "pip install -e '.[cloud]'" in failed.stderr, failed.stderr[-3000:]
    assert "gcsfs" in failed.stderr and "Traceback" not in failed.stderr


def importlib_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
