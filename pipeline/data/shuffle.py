"""The shuffle between preprocess's two kinds of task: those that read a part of the dataset and serialise its
examples, and those that write the TFRecord shards.

The training split is written in a seeded random order drawn over the whole split, so any shard may hold
examples from any part of the data: an all-to-all exchange. It goes through files laid out as Spark's
sort-based shuffle lays them out: each reading task writes one run file, its examples sorted by (shard,
position in the shard), and an index of where each shard's examples begin in it; a writing task reads,
from every run, the one contiguous byte range that holds its shards. Files grow with the number of reading
tasks, not with reading tasks times shards. The folder must be one that every worker can reach (a shared
mount on a cluster).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.core.outputs import write_bytes_atomic

RECORD_HEADER = struct.Struct("<qI")  # the example's position in its shard, the length of its bytes


def run_paths(folder: Path, run: int) -> tuple[Path, Path]:
    """(the run's examples, the run's shard index) for reading task `run`."""
    return Path(folder) / f"{run:08d}.run", Path(folder) / f"{run:08d}.index"


def write_run(folder: Path, run: int, shards: np.ndarray, positions: np.ndarray, examples: list[bytes], total: int):
    """Writes one reading task's examples: example i goes to shard `shards[i]` (numbered across the splits,
    0 to `total` - 1) at `positions[i]` within it."""
    order = np.lexsort((positions, shards))
    parts, offsets = [], np.zeros(total + 1, dtype=np.int64)
    for item in order:
        parts.append(RECORD_HEADER.pack(int(positions[item]), len(examples[item])))
        parts.append(examples[item])
        offsets[int(shards[item]) + 1] += RECORD_HEADER.size + len(examples[item])
    data_path, index_path = run_paths(folder, run)
    write_bytes_atomic(data_path, b"".join(parts))
    write_bytes_atomic(index_path, np.cumsum(offsets).astype("<i8").tobytes())  # last: a retry leaves no stale index


def read_runs(folder: Path, runs: int, first: int, end: int) -> Iterator[tuple[int, int, bytes]]:
    """(shard, position, example) for shards `first` to `end` - 1, from each of the `runs` run files."""
    for run in range(runs):
        data_path, index_path = run_paths(folder, run)
        with open(index_path, "rb") as index:
            index.seek(first * 8)
            starts = np.frombuffer(index.read((end - first + 1) * 8), dtype="<i8")  # where shards first..end begin
        with open(data_path, "rb") as data:
            data.seek(int(starts[0]))
            block = data.read(int(starts[-1] - starts[0]))
        shard, cursor = first, 0
        while cursor < len(block):
            while starts[shard - first + 1] - starts[0] <= cursor:  # past this shard's bytes: on to the next
                shard += 1
            position, length = RECORD_HEADER.unpack_from(block, cursor)
            cursor += RECORD_HEADER.size
            yield shard, position, block[cursor : cursor + length]
            cursor += length
