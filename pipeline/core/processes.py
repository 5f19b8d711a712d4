"""Local processes: free ports, a server started in the background until its /health answers, and the
quick exit of a command.

One helper for "start the server, poll /health, stop it", used by the export checks, the tests and
the benchmarks.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from pipeline.core.errors import StageError


def process_running(pid: int) -> bool:
    """Whether process `pid` of this host still runs (another user's counts). On Linux a thread's id is not a
    process: threads take ids from the same pool (32,768 here; TensorFlow starts dozens a process) and `kill(id,
    0)` succeeds for one, so a killed stage's id, reused by a thread, would make what it left look owned."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    if not sys.platform.startswith("linux"):
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # it ended meanwhile
        return False
    return f"\nTgid:\t{pid}\n" in status


def die_with_parent() -> None:
    """Run in a child before it starts: the kernel SIGKILLs it when its parent dies (Linux), so a server
    started in its own session (stoppable as a group) never outlives a stage killed with SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def exit_without_teardown(code: int | str | None) -> NoReturn:
    """Ends the process as `raise SystemExit(code)` would, less the interpreter's teardown of its modules.

    Python's own shutdown of a process that loaded TensorFlow, Keras and MLflow takes 1-1.6 s (it frees
    every module and object one by one): every TensorFlow stage of every `dvc repro` paid it, 14 s of a
    75 s penguins run. What a normal exit does for the program is kept: other threads that are not
    daemons are waited for, exit handlers run (MLflow's, temporary folders' finalizers), the standard
    streams are flushed; only the freeing of memory, which the kernel does at once, is skipped."""
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


_command_process = False  # set by `collect_cycles_less_often`: this process runs a pipeline command


def collect_cycles_less_often() -> None:
    """Run first in a command's process: Python's cycle collector looks at new objects every 700 allocations,
    and the collection of all generations, which walks every object alive, comes when enough have survived.
    The imports of a stage (TensorFlow and Keras, MLflow, Great Expectations) create 430,000-600,000 objects
    that live as long as the process: nine full collections walk them while they load, 0.6-0.9 s of a stage's
    start. Looking every 10,000 allocations leaves one or none in a whole stage (0.65-0.7 s of collection against
    1.2 s) and keeps the same collector for the work after them; what waits as garbage between two looks is at
    most that many objects."""
    global _command_process
    gc.set_threshold(10_000, *gc.get_threshold()[1:])
    _command_process = True


def leave_loaded_objects_out_of_collections() -> None:
    """Run where a stage has loaded its libraries (MLflow; TensorFlow and Keras): in a command's process
    (`collect_cycles_less_often` ran), every object alive now is left out of the cycle collector's later walks
    (`gc.freeze`). A full collection walks every object alive, and about 600,000 of them are the libraries'
    modules, classes and functions, which live as long as the process: each full collection after the imports
    (the collector's own, and the explicit ones of the TFLite converter and of Keras Tuner) walked them all again.
    Nothing is collected first (that would be one more full walk): a cycle that is already garbage now stays in
    memory until the process ends; objects that are not in a cycle are freed as before. A test or a notebook
    that calls a stage's parts in its own process keeps its collector as it was."""
    if _command_process:
        gc.freeze()


def tool(name: str) -> str:
    """A command installed beside this interpreter (the project's .venv/bin), else found on PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def background_server(
    command: list[str],
    base: str,
    timeout: float = 120.0,
    cwd: str | Path | None = None,
    environment: dict | None = None,
    meanwhile: Callable[[], object] | None = None,
) -> Iterator[subprocess.Popen]:
    """Runs `command` in its own process group; yields the process once `<base>/health` answers.

    `meanwhile()` runs after the start, before the wait: work of the caller's that overlaps the server's
    start-up (a Python server importing TensorFlow takes seconds). The server is stopped (SIGTERM to its
    group) on leaving the block, whatever happened in it.

    Raises:
        StageError: the server exited while starting, or did not answer within `timeout` seconds.
    """
    with started_process(command, cwd, environment) as process:
        if meanwhile is not None:
            meanwhile()
        wait_until_healthy(process, base, timeout)
        yield process


@contextlib.contextmanager
def started_process(
    command: list[str],
    cwd: str | Path | None = None,
    environment: dict | None = None,
    stdin: int | None = None,
) -> Iterator[subprocess.Popen]:
    """Starts `command` in its own process group, killed with its parent (`die_with_parent`); its output is
    readable through `process.stdout`. Stopped (SIGTERM to its group, SIGKILL after 30 s) on leaving the block.
    `stdin=subprocess.PIPE` gives the caller `process.stdin` to write to."""
    # The output goes to a file, read back through `process.stdout`: a pipe that nobody reads while a
    # server starts fills up at 64 KiB and stops it (PYTHONPROFILEIMPORTTIME=1 writes 300 KiB).
    handle, output = tempfile.mkstemp(prefix="server-", suffix=".log")
    try:
        with open(handle, "w") as writer:
            process = subprocess.Popen(
                command,
                cwd=cwd,
                stdin=stdin,
                stdout=writer,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
                env=environment,
                preexec_fn=die_with_parent,
            )
    except BaseException:
        os.unlink(output)
        raise
    process.stdout = open(output)  # noqa: SIM115 - closed in `finally`
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdin is not None:
            with contextlib.suppress(OSError):  # a broken pipe: the process is gone, which is the point
                process.stdin.close()
        process.stdout.close()
        os.unlink(output)


def wait_until_healthy(process: subprocess.Popen, base: str, timeout: float) -> None:
    """Returns once `<base>/health` answers.

    Raises:
        StageError: `process` exited first, or `timeout` seconds passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise StageError(f"the server exited while starting:\n{process.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise StageError(f"the server did not answer {base}/health within {timeout:.0f} s") from None
            time.sleep(0.2)
