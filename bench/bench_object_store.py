"""Reading an image folder in a bucket: ingest's fingerprint and validation's decoding, with the readers'
reads in flight (`pipeline.data.storage.READS_IN_FLIGHT`) against one read at a time, and against the same
files on disk.

The bucket is moto's S3 server on 127.0.0.1 behind a proxy that holds every request for `--latency-ms`
(a cloud store answers each read after tens of milliseconds; over loopback moto answers at once).

    python bench/bench_object_store.py                       # the digits, 0 and 20 ms per request
    python bench/bench_object_store.py --latency-ms 0 10 50 --files 1797
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IN_FLIGHT = (1, 16)


class LatencyProxy:
    """A TCP proxy that holds each chunk a client sends for `latency` seconds before passing it on."""

    def __init__(self, upstream_port: int):
        self.upstream_port, self.latency = upstream_port, 0.0
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._serve, args=(started,), daemon=True).start()
        started.wait()

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._connect, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    async def _connect(self, client_reader, client_writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer, delayed=True),
            self._pipe(upstream_reader, client_writer, delayed=False),
        )

    async def _pipe(self, reader, writer, delayed: bool) -> None:
        try:
            while data := await reader.read(65536):
                if delayed and self.latency:
                    await asyncio.sleep(self.latency)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1797, help="digits images in the bucket (at most 1797)")
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0])
    parser.add_argument("--smoke", action="store_true", help="200 files, 0 and 5 ms: only checks that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.files, args.latency_ms = 200, [0.0, 5.0]

    import boto3
    from moto.server import ThreadedMotoServer

    from pipeline.data import sources, storage, validation

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, moto_port = server.get_host_and_port()
    proxy = LatencyProxy(moto_port)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{moto_port}"
    client = boto3.client("s3")
    client.create_bucket(Bucket="bench")
    with tempfile.TemporaryDirectory() as scratch:
        folder = sources.write_digits_images(Path(scratch) / "images")
        local = sorted(str(path) for path in folder.rglob("*.png"))[: args.files]
        for path in local:
            client.upload_file(path, "bench", f"images/{Path(path).relative_to(folder).as_posix()}")
        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{proxy.port}"  # s3fs reads through the proxy
        remote = [f"s3://bench/images/{Path(path).relative_to(folder).as_posix()}" for path in local]

        print(f"{len(local)} digits PNGs (8x8, about 270 bytes each); files per second, higher is better\n")
        print("| where | latency per request | reads in flight | fingerprint (ingest) | decode (validate) |")
        print("|---|---|---|---|---|")
        rows = [("disk", None, 1)] + [("bucket", latency, count) for latency in args.latency_ms for count in IN_FLIGHT]
        expected = None
        for where, latency, count in rows:
            paths = local if where == "disk" else remote
            if latency is not None:
                proxy.latency = latency / 1000
            storage.READS_IN_FLIGHT = count
            started = time.perf_counter()
            fingerprint = sources.fingerprint_files(paths)
            hashed = time.perf_counter() - started
            started = time.perf_counter()
            described = validation.describe_images(paths)
            decoded = time.perf_counter() - started
            expected = expected or (fingerprint, [row["content_hash"] for row in described])
            assert (fingerprint, [row["content_hash"] for row in described]) == expected, "different bytes read"
            shown = "-" if latency is None else f"{latency:g} ms"
            print(
                f"| {where} | {shown} | {count} | {len(paths) / hashed:,.0f} | {len(paths) / decoded:,.0f} |",
                flush=True,
            )
    server.stop()


if __name__ == "__main__":
    main()
