"""Images on the data side: a folder with one sub-folder per class (or the built-in digits), read through a
manifest of its files; each image decoded, resized to one size and serialised as raw pixels."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.progress import progress
from pipeline.core.spec import ImageSpec
from pipeline.data import expectations, ingestion, preparation, shuffle, sources, storage, validation
from pipeline.data.modalities import DataModality
from pipeline.data.sources import IMAGE_EXTENSIONS

INPUT_NAME = "image"  # the model's one input


@dataclasses.dataclass(frozen=True)
class ShuffleImages:
    """A reading task: a slice of the image manifest decoded, serialised and written to the shuffle; returns
    the training images' `image_partials`."""

    size: tuple[int, int]
    color_mode: str
    task: str
    folder: str
    total_shards: int
    train_shards: int

    def __call__(self, item: tuple[int, list[str], np.ndarray, np.ndarray, np.ndarray]) -> tuple:
        run, paths, labels, shards, positions = item
        images = preparation.load_images(paths, list(self.size), self.color_mode)
        examples = preparation.serialise_examples({INPUT_NAME: images}, labels, self.task)
        shuffle.write_run(Path(self.folder), run, shards, positions, examples, self.total_shards)
        return preparation.image_partials(images[shards < self.train_shards])


class ImageData(DataModality):
    kind = "image"
    validated_file = validation.MANIFEST_FILE

    def ingest(self, data, output_dir, final_dir, batches, runner) -> dict:
        from pipeline.core.kinds import BUILTIN_SOURCES

        if data.source in ("digits", "digits_noisy"):
            root = sources.write_digits_images(output_dir / "images", noisy=data.source == "digits_noisy")
        else:
            root = data.path if storage.is_address(data.path) else Path(data.path)
        manifest, class_folders = sources.scan_image_dir(root)
        if data.source in BUILTIN_SOURCES:
            manifest["path"] = [str(final_dir / Path(path).relative_to(output_dir)) for path in manifest["path"]]
        extra = [sources.scan_image_dir(batch)[0] for batch in batches]
        manifest = pd.concat([manifest, *extra], ignore_index=True)
        fingerprint = sources.fingerprint_files(
            [_written(path, output_dir, final_dir) for path in manifest["path"]], manifest["label"].tolist(), runner
        )
        manifest_file = ingestion.MANIFEST_FILE
        manifest.to_parquet(output_dir / manifest_file, index=False)
        return dict(
            fingerprint=fingerprint,
            label="label",
            format="images",
            file=manifest_file,
            class_folders=class_folders,
            num_files=len(manifest),
        )

    def ingest_summary(self, description: dict) -> str:
        return f"{description['num_files']} files in {len(description['class_folders'])} class folders"

    def read_ingested(self, description, path) -> pd.DataFrame:
        return pd.read_parquet(path)

    def validation_frame(self, description, path, runner=None) -> pd.DataFrame:
        return validation.image_manifest(self.read_ingested(description, path), runner)

    def profile(self, frame, description):
        return expectations.profile_images(frame), []

    def example_schema(self, suite) -> dict:
        return expectations.image_example_schema(suite)

    def write_validated(self, frame, output_dir, table_written) -> None:
        frame.reset_index().rename(columns={"file": "path"}).to_parquet(output_dir / self.validated_file, index=False)

    def prepare(self, description, data_path, data, split, folder, runner) -> tuple:
        """The image manifest's labels split; images decoded and serialised into the shuffle in slices."""
        manifest = pd.read_parquet(data_path)
        task = split.task
        labels = task.encode_labels(manifest["label"], description.get("classes"))
        chosen = split(labels)
        layout = preparation.shard_layout(len(labels), chosen, split.settings.shard_size)
        paths = manifest["path"].tolist()
        size = data.image_size or list(preparation.load_images(paths[:1], None, data.color_mode).shape[1:3])
        reader = ShuffleImages(
            tuple(size), data.color_mode, task.name, folder, len(layout.names), layout.first_shard["validation"]
        )
        tasks = []
        for run, start in enumerate(range(0, len(paths), preparation.IMAGES_PER_TASK)):
            part = slice(start, start + preparation.IMAGES_PER_TASK)
            tasks.append((run, paths[part], labels[part], layout.shards[part], layout.positions[part]))
        partials = list(progress(runner.map(reader, tasks), "preparing images", total=len(tasks), minimum=10))
        channels = 1 if data.color_mode == "grayscale" else 3
        statistics = preparation.merged_image_statistics(partials)
        image = ImageSpec(name=INPUT_NAME, height=size[0], width=size[1], channels=channels, **statistics)
        return labels, chosen, layout, len(tasks), {"image": image}

    def read_examples(self, path, spec):
        """An image folder (class sub-folders: labelled) or one image file."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: no such file or folder.")
        if path.is_dir():
            files = sorted(
                file for file in path.rglob("*") if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not files:
                raise DataError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder.")
        else:
            files = [path]
        image = spec.image
        pixels = preparation.load_images([str(file) for file in files], [image.height, image.width], image.color_mode)
        inputs = {image.name: pixels.astype(np.float32)}
        ids = [str(file) for file in files]
        if not path.is_dir() or {file.parent for file in files} == {path}:
            return ids, inputs, None
        classes = {name: index for index, name in enumerate(spec.classes)}
        unknown = sorted({file.parent.name for file in files} - set(classes))
        if unknown:
            raise DataError(
                f"{path}: class folders {unknown} are not classes the model knows ({', '.join(spec.classes)});"
                " put unlabelled images directly in the folder."
            )
        return ids, inputs, np.array([classes[file.parent.name] for file in files])

    def feedback_data(self, data, path):
        if not path.is_dir():
            raise DataError(f"{path}: expected a folder with one sub-folder per class (the labels) of images.")
        return dataclasses.replace(data, source="image_dir", path=str(path))

    def copy_feedback(self, path, staging) -> None:
        manifest, _ = sources.scan_image_dir(path)
        for source, label in zip(manifest["path"], manifest["label"], strict=True):
            destination = staging / label / Path(source).name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)


def _written(path: str, output_dir: Path, final_dir: Path) -> str:
    """Where a manifest path's bytes are now (built-in images are still in `output_dir`)."""
    if storage.is_address(path):
        return path
    local = Path(path)
    return str(output_dir / local.relative_to(final_dir)) if local.is_relative_to(final_dir) else path


MODALITY = ImageData()
