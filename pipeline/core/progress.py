"""Progress bars for long loops (ingestion, validation); quiet for short ones."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")


def progress(items: Iterable[Item], description: str, total: int | None = None, minimum: int = 2000) -> Iterator[Item]:
    """Wraps `items` in a tqdm bar on stderr when there are at least `minimum` of them."""
    from tqdm.auto import tqdm

    return iter(
        tqdm(items, desc=description, total=total, file=sys.stderr, mininterval=1.0, disable=(total or 0) < minimum)
    )
