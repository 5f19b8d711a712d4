"""The shuffle between preprocess's reading and writing tasks: every example reaches its shard at its
position, whatever span of shards a writing task asks for, from runs that left some shards empty."""

from __future__ import annotations

import numpy as np

from pipeline.data import shuffle


def test_every_span_of_shards_gets_exactly_its_examples_from_every_run(tmp_path):
    generator = np.random.default_rng(0)
    total, expected = 9, {}
    for run in range(4):
        shards = generator.choice([0, 2, 3, 7], size=25)  # shards 1, 4, 5, 6 and 8 get nothing
        positions = generator.permutation(1000)[:25] + 1000 * run
        examples = [f"run {run} example {item}".encode() * (item % 3) for item in range(25)]  # some empty
        shuffle.write_run(tmp_path, run, shards, positions, examples, total)
        for shard, position, example in zip(shards, positions, examples, strict=True):
            expected[(int(shard), int(position))] = example
    for first, end in [(0, 9), (0, 1), (1, 3), (3, 8), (8, 9), (4, 7)]:
        read = {(shard, position): example for shard, position, example in shuffle.read_runs(tmp_path, 4, first, end)}
        assert read == {key: value for key, value in expected.items() if first <= key[0] < end}
