"""Where the data stages' parallel work runs: in this process (`data.engine: local`) or on Apache Beam.

The data stages cut their heavy work into independent tasks (a range of a table's rows to validate, a
slice of an image manifest to decode and hash) and merge the results in task order, so the outcome
cannot depend on which engine ran the tasks, on how many workers it had, or in which order they
finished. `local` runs the tasks one after the other; `beam` hands them to an Apache Beam pipeline:
Beam's local FnApiRunner with `data.engine_workers` worker processes on this machine, or any runner given in
`data.engine_options` (Flink, Spark, Dataflow: `--runner=FlinkRunner --flink_master=host:8081`).

Why Beam rather than Spark or Ray Data, with the measurements: docs/distributed.md.

Results travel as pickled files in a temporary folder under `paths.work`, which every worker must be able
to write: a local folder on this machine, a shared mount on a cluster.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline.core.outputs import scratch_directory, write_bytes_atomic

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Engine:
    """`data.engine` and its settings; `map` runs tasks on it."""

    name: str = "local"
    workers: int | None = None
    options: tuple[str, ...] = ()
    scratch: str | None = None  # where Beam's workers leave their results (a shared mount on a cluster)

    def map(self, function: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[Any]:
        """`function(task)` for every task, yielded in the order of `tasks`, one result in memory at a time.

        `function` must be picklable (a module-level function, or an instance of a module-level class)
        and so must its results: Beam ships them between processes.
        """
        if self.name == "local" or not tasks:
            return (function(task) for task in tasks)
        if self.name != "beam":
            raise ValueError(f"unknown data engine {self.name!r}; expected local or beam")
        return _run_on_beam(function, list(tasks), self.workers, list(self.options), self.scratch)


def from_config(config) -> Engine:
    data = config.data
    return Engine(data.engine, data.engine_workers, tuple(data.engine_options), str(Path(config.paths.work) / "engine"))


def beam_options(workers: int | None, options: list[str]) -> list[str]:
    """Beam pipeline options: the given ones, else Beam's FnApiRunner with worker processes on this machine.

    Named, not reached through the DirectRunner: Beam 2.78's DirectRunner first tries the PrismRunner, which downloads
    its binary from GitHub (no download at run time here: offline, it fails and leaves a `beam-temp*` folder in the
    system's temporary folder for each pipeline; online, the tasks would run on a runner nobody tested), then falls
    back to the FnApiRunner."""
    if any(option.startswith("--runner") for option in options):
        return options
    count = workers or os.cpu_count() or 1
    return [
        "--runner=FnApiRunner",
        f"--direct_num_workers={count}",
        "--direct_running_mode=multi_processing",
        *options,
    ]


class _WriteResult:
    """A Beam DoFn body: runs one task in the driver's working folder (tasks name the project's files by
    relative paths) and writes `(index, result)` under the results folder."""

    def __init__(self, function: Callable[[Any], Any], folder: str, directory: str):
        self.function, self.folder, self.directory = function, folder, directory

    def __call__(self, item: tuple[int, Any]) -> str:
        from pipeline.core.errors import USER_ERRORS

        if os.getcwd() != self.directory:  # a worker started elsewhere: a cluster's, or a worker pool's
            try:
                os.chdir(self.directory)
            except OSError as error:
                raise RuntimeError(
                    f"this Beam worker has no folder {self.directory} ({error.strerror}): data.engine on a cluster"
                    " needs the project folder mounted at the same path on every worker (docs/distributed.md)"
                ) from error
        index, task = item
        try:
            outcome = (True, self.function(task))
        except USER_ERRORS as error:  # bad data: raised again by the caller as it is, not as Beam's traceback
            outcome = (False, error)
        path = Path(self.folder) / f"{index:08d}.pickle"
        data = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        write_bytes_atomic(path, data, sweep=False)  # a retry rewrites it; the folder is swept as a whole
        return str(path)


def _run_on_beam(
    function: Callable[[Any], Any], tasks: list[Any], workers: int | None, options: list[str], scratch
) -> Iterator[Any]:
    try:
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError as error:  # the config check names the fix first; this is for direct callers
        raise RuntimeError("data.engine beam needs Apache Beam: pip install -e '.[beam]'") from error

    arguments = beam_options(workers, options)
    started = time.perf_counter()
    with scratch_directory(Path(scratch or tempfile.gettempdir()), "engine") as folder:
        with beam.Pipeline(options=PipelineOptions(arguments)) as pipeline:
            _ = (
                pipeline
                | "tasks" >> beam.Create(list(enumerate(tasks)), reshuffle=True)
                | "run" >> beam.Map(_WriteResult(function, str(folder.resolve()), os.getcwd()))
            )
        log.info(
            "%d task(s) on Apache Beam (%s) in %.1f s",
            len(tasks),
            " ".join(option for option in arguments if option.startswith(("--runner", "--direct_num"))),
            time.perf_counter() - started,
        )
        for index in range(len(tasks)):
            succeeded, value = pickle.loads((Path(folder) / f"{index:08d}.pickle").read_bytes())
            if not succeeded:
                raise value
            yield value
