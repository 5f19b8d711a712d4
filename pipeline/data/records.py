"""TFRecord files of `tf.train.Example` protos, written without TensorFlow.

The data stages only ever write these bytes; training reads them with `tf.data`. Importing TensorFlow took
3.5-4 s of the preprocess stage's 7-8 s on the tests' tiny data, and as long again in each of Beam's worker
processes. The encoding is protobuf's wire format for `tensorflow/core/example/{example,feature}.proto`, with the
map's keys sorted as `SerializeToString(deterministic=True)` sorts them; the framing is TFRecord's (a length and
each part's masked CRC-32C). tests/code/test_records.py checks both against TensorFlow's own, byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from pathlib import Path

import google_crc32c
import numpy as np

# Field tags (field number << 3 | wire type 2, length-delimited): Example.features, Features.feature (a map
# entry), the entry's key and value, Feature's bytes_list, float_list and int64_list, and each list's `value`.
_FEATURES = _ENTRY = _KEY = _BYTES_LIST = _VALUE = b"\x0a"
_ENTRY_VALUE = _FLOAT_LIST = b"\x12"
_INT64_LIST = b"\x1a"

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_CRC_MASK_DELTA = 0xA282EAD8
_SMALL_VARINTS = [bytes((value,)) for value in range(0x80)]


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint; a negative int64 as its 64-bit two's complement (10 bytes)."""
    if 0 <= value < 0x80:
        return _SMALL_VARINTS[value]
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def bytes_feature(value: bytes) -> bytes:
    """A `Feature` holding one bytes value."""
    return _field(_BYTES_LIST, _field(_VALUE, value))


def _float_list(packed: bytes) -> bytes:
    return _field(_FLOAT_LIST, _field(_VALUE, packed) if packed else b"")


def _float32(values) -> np.ndarray:
    """Little-endian float32, rounded as protobuf rounds a double (beyond float32's range: infinite, silently)."""
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float64).astype("<f4")


def float_feature(values: np.ndarray) -> bytes:
    """A `Feature` holding floats (as little-endian float32, packed; none: an empty list)."""
    return _float_list(_float32(values).tobytes())


def int64_feature(values: Iterable[int]) -> bytes:
    """A `Feature` holding int64 values (packed varints)."""
    packed = b"".join(_varint(int(value)) for value in values)
    return _field(_INT64_LIST, _field(_VALUE, packed) if packed else b"")


def examples(columns: dict[str, Callable[[int], bytes]], rows: int) -> list[bytes]:
    """Serialised `Example`s of rows 0 to `rows` - 1, each feature `columns[name](row)`: the map's keys sorted once
    (by their UTF-8 bytes, as TensorFlow's deterministic serialisation sorts them)."""
    keyed = sorted((name.encode(), encode) for name, encode in columns.items())
    keys = [_field(_KEY, key) + _ENTRY_VALUE for key, _ in keyed]
    encoders = [encode for _, encode in keyed]
    serialised = []
    for row in range(rows):
        entries = []
        for key, encode in zip(keys, encoders, strict=True):
            feature = encode(row)
            entry = key + _varint(len(feature)) + feature
            entries.append(_ENTRY + _varint(len(entry)) + entry)
        serialised.append(_field(_FEATURES, b"".join(entries)))
    return serialised


def value_feature(value) -> bytes:
    """One example's value: an image's uint8 pixels as raw bytes, a text as UTF-8, a window of a series' values
    (another array) or a number as floats."""
    if isinstance(value, np.ndarray) and value.dtype == np.uint8:
        return bytes_feature(value.tobytes())
    if isinstance(value, str):
        return bytes_feature(value.encode())
    if isinstance(value, np.ndarray):
        return float_feature(value.ravel())
    return float_feature(np.array([float(value)]))


def float_rows(values: np.ndarray) -> Callable[[int], bytes]:
    """Row -> `float_feature(values[row])`, the whole array converted at once."""
    floats = _float32(values).reshape(len(values), -1)
    width = floats.shape[1] * 4
    zeros = _float_list(bytes(width))
    prefix = zeros[: len(zeros) - width]  # the tags and lengths, the same for every row
    return lambda row: prefix + floats[row].tobytes()


def int64_rows(values: np.ndarray) -> Callable[[int], bytes]:
    """Row -> `int64_feature([values[row]])`: one integer a row (a class index)."""
    return lambda row: int64_feature([values[row]])


def column_features(values: np.ndarray) -> Callable[[int], bytes]:
    """Row -> `value_feature(values[row])`, numeric columns converted at once."""
    if values.dtype == np.uint8 and values.ndim > 1:
        return lambda row: bytes_feature(values[row].tobytes())
    if values.dtype.kind in "biuf":
        return float_rows(values)
    return lambda row: value_feature(values[row])


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated right by 15 bits, plus a constant."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One TFRecord: the length, its masked CRC, the data and its masked CRC."""
    length = _LENGTH.pack(len(data))
    return length + _CRC.pack(masked_crc32c(length)) + data + _CRC.pack(masked_crc32c(data))


def write_records(path: Path, records: Iterable[bytes]) -> None:
    """A TFRecord file (uncompressed) of `records`, as `tf.io.TFRecordWriter` writes it."""
    with open(path, "wb") as file:
        for data in records:
            file.write(record(data))
