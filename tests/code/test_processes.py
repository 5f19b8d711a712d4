"""The background-server helper: up when /health answers, gone with its parent even after a SIGKILL."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from pipeline.core.errors import StageError
from pipeline.core.processes import background_server, free_port, process_running

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


def test_work_given_as_meanwhile_runs_while_the_server_starts_and_its_error_stops_the_server():
    port, seen = free_port(), []

    def meanwhile():  # runs before the wait: the server is still starting Python, nothing listens yet
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            seen.append("listening")
        except OSError:
            seen.append("starting")

    with background_server(
        [sys.executable, "-c", SERVER, str(port)], f"http://127.0.0.1:{port}", 60, meanwhile=meanwhile
    ):
        assert seen == ["starting"]
    servers = []

    def failing():
        servers.append(port)
        raise ValueError("the work failed")

    with pytest.raises(ValueError, match="the work failed"):
        with background_server(
            [sys.executable, "-c", SERVER, str(port)], f"http://127.0.0.1:{port}", 60, meanwhile=failing
        ):
            pass
    with pytest.raises(OSError):  # stopped: nothing listens on the port any more
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_a_server_that_prints_a_lot_while_starting_still_comes_up():
    """Its output once went to a pipe nobody read: at 64 KiB the server stopped (PYTHONPROFILEIMPORTTIME=1)."""
    port = free_port()
    chatty = "import sys; sys.stderr.write('x' * 300_000 + chr(10)); sys.stderr.flush()\n" + SERVER
    with background_server([sys.executable, "-c", chatty, str(port)], f"http://127.0.0.1:{port}", 30) as server:
        assert len(server.stdout.readline()) == 300_001


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


QUICK_EXIT = """
import atexit, pathlib, sys, tempfile, threading, time
from pipeline.core.processes import exit_without_teardown
folder = pathlib.Path(sys.argv[1])
atexit.register(lambda: (folder / "exit handler").write_text("ran"))
scratch = tempfile.TemporaryDirectory(dir=folder)  # never cleaned up explicitly: its finalizer must run
threading.Thread(target=lambda: (time.sleep(0.5), (folder / "thread").write_text("finished"))).start()
print("buffered, not yet flushed", end="")
exit_without_teardown(int(sys.argv[2]) if sys.argv[2].isdigit() else sys.argv[2])
"""


@pytest.mark.parametrize(("code", "status"), [("3", 3), ("0", 0), ("stopped: a message", 1)])
def test_the_quick_exit_keeps_what_a_normal_exit_does_for_the_program(tmp_path, code, status):
    finished = subprocess.run([sys.executable, "-c", QUICK_EXIT, str(tmp_path), code], capture_output=True, text=True)
    assert finished.returncode == status
    assert finished.stdout == "buffered, not yet flushed"
    assert (tmp_path / "exit handler").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "finished"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exit handler", "thread"]  # no temporary folder
    assert finished.stderr.strip() == ("" if code.isdigit() else code)


def test_python_m_pipeline_exits_with_the_commands_status(tmp_path):
    missing = subprocess.run(
        [sys.executable, "-m", "pipeline", "check-config", "--params", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "no such params file" in missing.stderr
    usage = subprocess.run([sys.executable, "-m", "pipeline", "run", "nothing"], capture_output=True, text=True)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


COMMAND_START = """
import gc, runpy
import pipeline.cli
pipeline.cli.main = lambda: print(gc.get_threshold()[0]) or 0  # where the command's own imports begin
runpy.run_module("pipeline", run_name="__main__")
"""


def test_python_m_pipeline_collects_cycles_less_often_before_the_command_imports_anything():
    started = subprocess.run([sys.executable, "-c", COMMAND_START], capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "10000"


COMMAND_LOADS = """
import gc, runpy
import pipeline.cli


def command():  # what a stage's process loads: its MLflow run, then TensorFlow
    from pipeline.core import tracking
    from pipeline.core.config import load_config
    from pipeline.ml.distribute import setup_tensorflow

    config = load_config("params.yaml")
    counts = [gc.get_freeze_count()]
    with tracking.pipeline_run(config, "evaluate"):
        counts.append(gc.get_freeze_count())
        setup_tensorflow(config)
        counts.append(gc.get_freeze_count())
    print(*counts)
    return 0


pipeline.cli.main = command
runpy.run_module("pipeline", run_name="__main__")
"""


def test_a_stage_process_leaves_the_libraries_it_loaded_out_of_later_collections(workdir):
    started = subprocess.run([sys.executable, "-c", COMMAND_LOADS], capture_output=True, text=True, cwd=workdir)
    assert started.returncode == 0, started.stderr
    before, with_mlflow, with_tensorflow = map(int, started.stdout.split()[-3:])
    assert before == 0
    assert 100_000 < with_mlflow < with_tensorflow  # MLflow's objects, then TensorFlow's and Keras' as well


def test_a_process_that_runs_no_command_keeps_its_collector(workdir):
    """A test or a notebook that opens the pipeline's run in its own process: nothing is frozen there."""
    from pipeline.core import tracking
    from pipeline.core.config import load_config

    before = gc.get_freeze_count()
    with tracking.pipeline_run(load_config("params.yaml"), "evaluate"):
        assert gc.get_freeze_count() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread ids are process ids on Linux")
def test_a_thread_id_is_not_a_running_process():
    """A killed stage's process id, reused by some process's thread, must not make what the stage left look owned."""
    started, done, ids = threading.Event(), threading.Event(), []

    def thread():
        ids.append(threading.get_native_id())
        started.set()
        done.wait()

    worker = threading.Thread(target=thread)
    worker.start()
    started.wait()
    try:
        os.kill(ids[0], 0)  # what `process_running` once relied on: it succeeds for a thread
        assert not process_running(ids[0])
        assert process_running(os.getpid())
    finally:
        done.set()
        worker.join()
    assert not process_running(ids[0])
