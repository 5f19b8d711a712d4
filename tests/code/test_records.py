"""The shards' bytes, written without TensorFlow, are those TensorFlow writes, and TensorFlow reads them."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from pipeline.data import records
from pipeline.data.preparation import serialise_examples
from tests.conftest import ROOT, run

ROWS = 8


def tensorflow_examples(features: dict[str, np.ndarray], labels: np.ndarray, label_dtype: str) -> list[bytes]:
    """What the preprocess stage wrote when it serialised with TensorFlow's own protos."""
    import tensorflow as tf

    def feature(value) -> tf.train.Feature:
        if isinstance(value, np.ndarray) and value.dtype == np.uint8:
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.tobytes()]))
        if isinstance(value, str):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        if isinstance(value, np.ndarray):
            return tf.train.Feature(float_list=tf.train.FloatList(value=value.astype(np.float64).tolist()))
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))

    def label(value) -> tf.train.Feature:
        if label_dtype == "int64":
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        return tf.train.Feature(float_list=tf.train.FloatList(value=np.atleast_1d(value).astype(np.float64).tolist()))

    serialised = []
    for row in range(len(labels)):
        named = {key: feature(values[row]) for key, values in features.items()} | {"label": label(labels[row])}
        example = tf.train.Example(features=tf.train.Features(feature=named))
        serialised.append(example.SerializeToString(deterministic=True))
    return serialised


GENERATOR = np.random.default_rng(7)
CASES = {
    "images": (
        {"image": GENERATOR.integers(0, 256, (ROWS, 5, 4, 3), dtype=np.uint8)},
        GENERATOR.integers(0, 10, ROWS),
        "classification",
    ),
    "a hostile table": (
        {
            # NaN, infinities, -0.0, a double beyond float32 (infinite), the smallest subnormal
            "bill length": np.array([1.5, np.nan, np.inf, -np.inf, -0.0, 3.4e39, 5e-324, -2.75]),
            "île ☃": np.array(["Biscoe", "Dröm", "", "東京", "x" * 300, "\x00", "🚋", "a"], dtype=object),
            "count": np.array([-5, 0, 127, 128, 2**40, -(2**40), 1, 2]),
            "flag": np.array([True, False] * 4),
            "byte": np.arange(ROWS, dtype=np.uint8),
            "float32": GENERATOR.normal(size=ROWS).astype(np.float32),
            "mixed": np.array([1.5, "a", np.float32(2.25), 7, "b", 0.1, "", -3], dtype=object),
            "Label": GENERATOR.normal(size=ROWS),  # sorts before "label", and "île" after it (UTF-8 bytes)
        },
        np.array([0, 2, 1, 300, 2**33, 0, 1, 2]),
        "classification",
    ),
    "texts": (
        {"review": np.array(["great 😀 film", "ça va", "", "\x00nul", "a\nb", "é" * 200, "z", "0"], dtype=object)},
        GENERATOR.integers(0, 2, ROWS),
        "classification",
    ),
    "series windows and a forecast": (
        {"value": GENERATOR.normal(size=(ROWS, 24)), "empty": np.zeros((ROWS, 0))},
        GENERATOR.normal(size=(ROWS, 6)) * 1e6,
        "forecast",
    ),
    "regression": ({"x": GENERATOR.normal(size=ROWS)}, GENERATOR.normal(size=ROWS) * 1e-30, "regression"),
}


@pytest.mark.parametrize("case", CASES)
def test_examples_are_the_bytes_of_tensorflows_deterministic_serialisation(case):
    from pipeline.core.tasks import task

    features, labels, task_name = CASES[case]
    expected = tensorflow_examples(features, labels, task(task_name).label_dtype)
    assert serialise_examples(features, labels, task_name) == expected


def test_the_record_file_is_tensorflows_byte_for_byte_and_tensorflow_reads_it_back(tmp_path):
    import tensorflow as tf

    features, labels, task_name = CASES["a hostile table"]
    written = [*serialise_examples(features, labels, task_name), b"", b"\xff" * 70_000]  # a length over 2 bytes
    with tf.io.TFRecordWriter(str(tmp_path / "tensorflow.tfrecord")) as writer:
        for data in written:
            writer.write(data)
    records.write_records(tmp_path / "ours.tfrecord", written)
    assert (tmp_path / "ours.tfrecord").read_bytes() == (tmp_path / "tensorflow.tfrecord").read_bytes()
    read = [item.numpy() for item in tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord"))]
    assert read == written


def test_a_corrupted_byte_fails_tensorflows_checksum(tmp_path):
    """The checksums are real: TensorFlow checks them when it reads."""
    import tensorflow as tf

    path = tmp_path / "shard.tfrecord"
    records.write_records(path, [b"some example bytes"])
    data = bytearray(path.read_bytes())
    data[14] ^= 1  # a byte of the record's data
    path.write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError, match="corrupted record"):
        list(tf.data.TFRecordDataset(str(path)))


def test_the_preprocess_work_never_imports_tensorflow(tmp_path):
    """Importing TensorFlow took 3.5-4 s of the preprocess stage's 7-8 s, and again in each Beam worker."""
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    script = (
        "import sys\n"
        "import numpy as np, pandas as pd\n"
        "from pipeline.core.config import DataConfig, PreprocessConfig\n"
        "from pipeline.data.preparation import preprocess\n"
        "table = pd.DataFrame({'size': np.arange(60.0), 'city': ['Zürich', 'Bâle', None] * 20,"
        " 'label': ['a', 'b'] * 30})\n"
        f"table.to_parquet({str(tmp_path / 'table.parquet')!r})\n"
        "description = {'kind': 'table', 'task': 'classification', 'label': 'label', 'classes': ['a', 'b'],"
        " 'fingerprint': 'test'}\n"
        f"preprocess(description, {str(tmp_path / 'table.parquet')!r}, DataConfig(source='csv'), PreprocessConfig(),"
        f" 1, {str(prepared)!r})\n"
        "print('tensorflow' in sys.modules)\n"
    )
    assert run([sys.executable, "-c", script], ROOT).stdout.strip().splitlines()[-1] == "False"
    import tensorflow as tf

    shards = sorted(prepared.glob("*.tfrecord"))
    assert [path.name.split("-")[0] for path in shards] == ["test", "train", "validation"]
    read = sum(1 for path in shards for _ in tf.data.TFRecordDataset(str(path)))
    assert read == 60
