"""Text on the data side: a table with free-text columns (the built-in Rotten Tomatoes reviews, a user's CSV or
Parquet file with `data.text_columns`), or a folder with one sub-folder of `.txt` files per class, which is
ingested as a table of `text` and `label`. From the snapshot on, text is a table whose text columns are typed
`text` (`pipeline.core.column_types.Text`): validated with text checks, their words counted on the training
split."""

from __future__ import annotations

from pathlib import Path

from pipeline.data import sources
from pipeline.data.modalities.table import TableData


class TextData(TableData):
    kind = "text"

    def write_snapshot(self, data, target: Path) -> None:
        if data.source == "rotten_tomatoes":
            sources.write_rotten_tomatoes_csv(target)
        elif data.source == "text_dir":
            sources.read_text_dir(Path(data.path), target)
        else:
            super().write_snapshot(data, target)

    def ingest_summary(self, description: dict) -> str:
        return f"{description['format']} file with text columns {description['text_columns']}"


MODALITY = TextData()
