"""Typed data specs for unit tests, from the few fields a test cares about."""

from __future__ import annotations

from pipeline.core.spec import DataSpec


def make_spec(fields: dict) -> DataSpec:
    """A DataSpec from `fields`, with a label, fingerprint and schema when the test gives none, and an image's
    name and neutral statistics filled in."""
    raw = {"label": "label", "fingerprint": "test", "schema": None, "task": "classification", **fields}
    if "image" in raw:
        channels = raw["image"]["channels"]
        raw["image"] = {"name": "image", "mean": [0.0] * channels, "variance": [1.0] * channels, **raw["image"]}
    return DataSpec.from_dict(raw)
