"""The background-server helper: up when /health answers, gone with its parent even after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.core.errors import StageError
from pipeline.core.processes import background_server, free_port

SERVER = """
import http.server, sys
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""

PARENT = """
import sys, time
from pipeline.core.processes import background_server
port = sys.argv[1]
with background_server([sys.executable, "-c", sys.argv[2], port], f"http://127.0.0.1:{port}", 60) as server:
    print(server.pid, flush=True)
    time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie is dead
        return handle.read().split(")")[-1].split()[0] != "Z"


def test_the_server_is_up_inside_the_block_and_stopped_after():
    port = free_port()
    with background_server([sys.executable, "-c", SERVER, str(port)], f"http://127.0.0.1:{port}", 60) as server:
        assert server.poll() is None
    assert server.poll() is not None


def test_a_server_that_exits_while_starting_is_a_clear_error():
    with pytest.raises(StageError, match="exited while starting"):
        with background_server([sys.executable, "-c", "raise SystemExit(3)"], "http://127.0.0.1:9", 30):
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_server_dies_with_its_parent_killed_by_sigkill():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(free_port()), SERVER], stdout=subprocess.PIPE, text=True
    )
    server_pid = int(parent.stdout.readline())
    assert alive(server_pid)
    os.kill(parent.pid, signal.SIGKILL)  # no `finally`, no exit handler: as a killed stage
    parent.wait()
    deadline = time.monotonic() + 10
    while alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(server_pid), "the server outlived the stage that started it"
