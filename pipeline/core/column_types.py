"""A table's column types (numeric, categorical, text): how each is typed, summarised, checked in a request,
tested for drift and fed to the model, in one class per type.

Code that handles a column asks its type (`FeatureSpec.column_type`, or `column_type(name)`); it never
compares a type's name to a literal. The Keras layers of each type are `pipeline.ml.features`'
`PREPROCESSING`. No TensorFlow.

Adding a column type: a subclass here (listed in COLUMN_TYPES, before the types it should win over) and its
preprocessing layers in `pipeline.ml.features`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from pipeline.core.errors import ConfigError

MISSING_TEXT = ""  # a missing text value, in the TFRecords and in the model's string inputs
MAX_NGRAMS = 2  # free text: the longest n-grams counted (`model.text_ngrams` may use fewer)


class InvalidValueError(ValueError):
    """A request's value that the column cannot take; the message names the field."""


def as_text(value: Any) -> str:
    """A string value as Python text: bytes (read back from TFRecords or a tensor) are UTF-8."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class ColumnType:
    name: str = ""
    input_dtype: str = ""
    """The dtype of the model's input for the column (float32 or string)."""
    mlflow_type: str = ""
    """The column's type in an MLflow schema."""
    tflite_supported: bool = True
    """Whether the column's preprocessing converts to TFLite builtin ops."""
    drift_test: str = ""
    """The monitor's test for the column: ks (a distribution of numbers) or chi2 (shares of values)."""
    plotted: bool = False
    """Whether the monitor's report draws the column's histogram."""
    numbers: bool = False
    """Whether its values are numbers (validation's profile bounds them by a range, not a set of values)."""
    free_text: bool = False
    """Whether its values are free text (read as words; declared in `data.text_columns`, never by dtype)."""

    def matches(self, dtype) -> bool:
        """Whether a pandas column of `dtype` is of this type."""
        raise NotImplementedError

    def typed(self, values, where: str = "") -> np.ndarray:
        """A pandas column as the model reads it, missing values as the type's missing value. A value that
        cannot be of the type is a DataError naming `where` (a file) and the column."""
        raise NotImplementedError

    def from_records(self, values: np.ndarray) -> np.ndarray:
        """Values as parsed back from the TFRecords (numbers, or UTF-8 bytes) in `typed`'s form."""
        raise NotImplementedError

    def missing(self, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def present(self, values: np.ndarray) -> np.ndarray:
        return values[~self.missing(values)]

    learnt_from_training: tuple[str, ...] = ()
    """`drift_samples` suffixes that depend on what was learnt from the training split (its vocabulary): compared
    with the validation split, since the training split fits them by construction."""

    def drift_samples(self, values: np.ndarray, feature) -> dict[str, np.ndarray]:
        """What the monitor's `drift_test` compares, by the suffix of the test's name: the present values
        themselves (text: their lengths in words, and their shares of words outside the vocabulary)."""
        return {"": values}

    def drift_test_for(self, suffix: str, feature):
        """The test (`pipeline.core.drift`) of the `drift_samples` sample named by `suffix`: `drift_test`'s."""
        from pipeline.core import drift

        return {"ks": drift.ks_test, "chi2": drift.category_test}[self.drift_test]

    def partial_statistics(self, values) -> dict:
        """What the training split's statistics need from a part of it, merged by `merge_statistics`."""
        raise NotImplementedError

    def merge_statistics(self, pieces: list[dict], column: str) -> dict:
        """The statistics of the whole training split (FeatureSpec fields) from its parts', in order."""
        raise NotImplementedError

    def request_value(self, value: Any, field: str, rules: dict, allow_missing: bool) -> Any:
        """A request's JSON value checked against the validation schema's `rules`; raises InvalidValueError."""
        raise NotImplementedError

    def to_request(self, value: Any) -> Any:
        """A model input value as a request's JSON value (None when missing)."""
        raise NotImplementedError

    def linear_encoder(self):
        """An unfitted scikit-learn transformer from the column's values, an (N, 1) array in `typed`'s form, to
        the linear baseline's numbers (`pipeline.ml.baselines`)."""
        raise NotImplementedError


class Numeric(ColumnType):
    name = "numeric"
    input_dtype = "float32"
    mlflow_type = "double"
    drift_test = "ks"
    plotted = True
    numbers = True

    def matches(self, dtype) -> bool:
        import pandas as pd

        return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)

    def typed(self, values, where: str = "") -> np.ndarray:
        import pandas as pd

        from pipeline.core.errors import DataError

        converted = pd.to_numeric(values, errors="coerce")
        bad = values.notna() & converted.isna()
        if bad.any():
            raise DataError(f"{where}: column {values.name} holds non-numbers, e.g. {values[bad].iloc[0]!r}.")
        return converted.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)

    def from_records(self, values: np.ndarray) -> np.ndarray:
        return values

    def missing(self, values: np.ndarray) -> np.ndarray:
        return np.isnan(values)

    def linear_encoder(self):
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler())

    def partial_statistics(self, values) -> dict:
        present = np.asarray(values, dtype=np.float64)
        present = present[np.isfinite(present)]
        distinct, counts = np.unique(present, return_counts=True)
        return {
            "count": int(present.size),
            "mean": float(present.mean()) if present.size else 0.0,
            "variance": float(present.var()) if present.size else 0.0,
            "distinct": distinct,
            "counts": counts,
        }

    def merge_statistics(self, pieces: list[dict], column: str) -> dict:
        """The median is exact (from the merged value counts), mean and variance merge by Chan's formula (a
        single part's are numpy's own)."""
        from pipeline.core.errors import DataError

        pieces = [piece for piece in pieces if piece["count"]]
        if not pieces:
            raise DataError(f"column {column!r} has no numeric values in the training split.")
        count, mean, squares = pieces[0]["count"], pieces[0]["mean"], pieces[0]["variance"] * pieces[0]["count"]
        variance = pieces[0]["variance"]
        for piece in pieces[1:]:
            delta, total = piece["mean"] - mean, count + piece["count"]
            mean += delta * piece["count"] / total
            squares += piece["variance"] * piece["count"] + delta * delta * count * piece["count"] / total
            count, variance = total, None
        distinct, inverse = np.unique(np.concatenate([piece["distinct"] for piece in pieces]), return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate([piece["counts"] for piece in pieces]))
        ranks = np.cumsum(counts)  # values below rank r: those with ranks[i] <= r
        low, high = distinct[np.searchsorted(ranks, [(count - 1) // 2, count // 2], side="right")]
        return {
            "mean": float(mean),
            "variance": float(squares / count if variance is None else variance),
            "median": float(low if low == high else (low + high) / 2),
        }

    def request_value(self, value: Any, field: str, rules: dict, allow_missing: bool) -> Any:
        if value is None and allow_missing:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidValueError(f"{field}: expected a number, got {json.dumps(value)}")
        if not math.isfinite(value):
            raise InvalidValueError(f"{field}: expected a finite number, got {value}")
        number = float(value)
        low, high = rules.get("range", [None, None])
        if (low is not None and number < low) or (high is not None and number > high):
            raise InvalidValueError(f"{field}: {number:g} is outside the trained range [{low}, {high}]")
        return number

    def to_request(self, value: Any) -> Any:
        return None if np.isnan(value) else float(value)


class Categorical(ColumnType):
    name = "categorical"
    input_dtype = "string"
    mlflow_type = "string"
    drift_test = "chi2"

    def matches(self, dtype) -> bool:
        return True  # anything that is not a number is read as a category

    def typed(self, values, where: str = "") -> np.ndarray:
        import pandas as pd

        return np.array([MISSING_TEXT if pd.isna(value) else str(value) for value in values], dtype=object)

    def from_records(self, values: np.ndarray) -> np.ndarray:
        # UTF-8, not numpy's astype(str), which decodes bytes as ASCII and fails on "Zürich"
        return np.array([as_text(value) for value in values.reshape(-1)], dtype=object)

    def missing(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values == MISSING_TEXT, dtype=bool)

    def linear_encoder(self):
        from sklearn.preprocessing import OneHotEncoder

        return OneHotEncoder(handle_unknown="ignore")  # a missing value ("") is a category of its own

    def partial_statistics(self, values) -> dict:
        texts = values[values != MISSING_TEXT]
        return {"texts": texts.value_counts(sort=False).to_dict()}  # first appearance first

    def merge_statistics(self, pieces: list[dict], column: str) -> dict:
        """The most frequent text is the first to appear among the most frequent."""
        counts: dict[str, int] = {}
        for piece in pieces:
            for text, number in piece["texts"].items():
                counts[text] = counts.get(text, 0) + number
        return {
            "vocabulary": sorted(str(value) for value in counts),
            "most_frequent": str(max(counts, key=counts.get)) if counts else MISSING_TEXT,
        }

    expected = "a string"
    """What a request's value must be, in the error message."""

    def request_value(self, value: Any, field: str, rules: dict, allow_missing: bool) -> Any:
        if value is None and allow_missing:
            return MISSING_TEXT
        if not isinstance(value, str):
            shown = json.dumps(value)
            shown = shown if len(shown) <= 80 else f"{shown[:80]}... ({type(value).__name__})"
            raise InvalidValueError(f"{field}: expected {self.expected}, got {shown}")
        self.check_rules(value, field, rules)
        return value

    def check_rules(self, value: str, field: str, rules: dict) -> None:
        """A request's string against the validation schema's rules for the column."""
        allowed = rules.get("categories")
        if allowed is not None and value not in allowed:
            raise InvalidValueError(f"{field}: {value!r} is not a known category; expected one of {allowed}")

    def to_request(self, value: Any) -> Any:
        return as_text(value) or None


class Text(Categorical):
    """Free text: the model reads its words (`TextVectorization` over the training split's vocabulary), not the
    whole value as one category. A column is text only when declared (`data.text_columns`, or a text source)."""

    name = "text"
    tflite_supported = False  # TextVectorization's string ops are not TFLite builtins: an app vectorises the text
    drift_test = "ks"  # on the texts' lengths in words and shares of unknown words (`drift_samples`)
    learnt_from_training = (" (unknown words)",)  # every training word is known: 0 % unknown, a false alarm
    frequent_words = 20
    """The monitor compares how many texts hold each of the training split's most frequent words."""
    free_text = True
    max_vocabulary = 10_000
    """Words kept from the training split (the sequence models' vocabulary); `model.text_max_tokens` can take
    fewer, the most frequent."""
    max_terms = 200_000
    """Terms (words and word pairs) kept for the bag of n-grams, those in most training texts first (ties by the
    term): every term of Rotten Tomatoes' 9,700 training reviews and plots (162,019) fits."""
    kept_per_part = 200_000
    """Terms a part of the training split hands on to the merge (the rarest are dropped first)."""

    def matches(self, dtype) -> bool:
        return False  # declared, never guessed from a dtype

    def drift_samples(self, values: np.ndarray, feature) -> dict[str, np.ndarray]:
        """Lengths in words, the share of each text's words that the training split's vocabulary lacks (a new
        topic, language or alphabet raises it), and whether each text holds each of the most frequent training
        words (a new mix of topics moves them)."""
        from pipeline.core.tokens import words

        known = set(feature.vocabulary or [])
        frequent = (feature.vocabulary or [])[: self.frequent_words]
        split = [words(value) for value in values]
        lengths = np.array([len(found) for found in split], dtype=np.float64)
        unknown = np.array([sum(word not in known for word in found) / len(found) if found else 0.0 for found in split])
        held = np.array([[word in present for word in frequent] for present in map(set, split)], dtype=bool)
        return {
            " (words)": lengths,
            " (unknown words)": unknown,
            " (frequent words)": held.reshape(len(split), len(frequent)),
        }

    def drift_test_for(self, suffix: str, feature):
        import functools

        from pipeline.core import drift

        if suffix == " (frequent words)":
            return functools.partial(drift.presence_test, names=tuple(feature.vocabulary or [])[: self.frequent_words])
        return super().drift_test_for(suffix, feature)

    def linear_encoder(self):
        """TF-IDF of the words and word pairs (split as the model splits them), sublinear counts."""
        import functools

        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer

        from pipeline.core.tokens import terms

        texts = FunctionTransformer(np.ravel)  # (N, 1) -> (N,): the vectorizer takes one text per example
        return make_pipeline(
            texts, TfidfVectorizer(analyzer=functools.partial(terms, ngrams=MAX_NGRAMS), sublinear_tf=True)
        )

    def partial_statistics(self, values) -> dict:
        from collections import Counter

        from pipeline.core.tokens import terms

        word_counts, document_counts, lengths = Counter(), Counter(), Counter()
        texts = values[values != MISSING_TEXT]
        for text in texts:
            found = terms(text, MAX_NGRAMS)
            length = sum(" " not in term for term in found)
            word_counts.update(found[:length])
            document_counts.update(set(found))
            lengths[length] += 1
        return {
            "texts": int(len(texts)),
            "words": dict(word_counts.most_common(self.kept_per_part)),
            "documents": dict(document_counts.most_common(self.kept_per_part)),
            "lengths": dict(lengths),
        }

    def merge_statistics(self, pieces: list[dict], column: str) -> dict:
        """The most frequent words (ties by the word), the terms in most texts with their idf (ties by the term)
        and how many of them are in two texts or more."""
        from collections import Counter

        from pipeline.core.errors import DataError

        words, documents, lengths, texts = Counter(), Counter(), Counter(), 0
        for piece in pieces:
            words.update(piece["words"])
            documents.update(piece["documents"])
            lengths.update(piece["lengths"])
            texts += piece["texts"]
        if not texts:
            raise DataError(f"text column {column!r} has no texts in the training split.")
        ranked_words = sorted(words, key=lambda word: (-words[word], word))[: self.max_vocabulary]
        ranked_terms = sorted(documents, key=lambda term: (-documents[term], term))[: self.max_terms]
        sizes = np.repeat(np.array(list(lengths), dtype=np.int64), list(lengths.values()))
        return {
            "vocabulary": ranked_words,
            "terms": ranked_terms,
            "idf": [round(math.log(1 + texts / (1 + documents[term])), 6) for term in ranked_terms],
            "shared_terms": sum(documents[term] > 1 for term in ranked_terms),
            "words_mean": float(sizes.mean()),
            "words_p95": int(np.percentile(sizes, 95, method="higher")),
        }

    expected = "a string of text"

    def check_rules(self, value: str, field: str, rules: dict) -> None:
        limit = rules.get("max_length")
        if limit is not None and len(value) > limit:
            raise InvalidValueError(
                f"{field}: a text of {len(value)} characters; this model takes at most {limit}"
                " (the validation suite's bound)"
            )


# In the order a column's dtype is matched: the first type that matches is the column's (text never matches:
# it is declared).
COLUMN_TYPES: dict[str, ColumnType] = {kind.name: kind for kind in (Numeric(), Categorical(), Text())}


def column_type(name: str) -> ColumnType:
    if name not in COLUMN_TYPES:
        raise ConfigError(f"unknown column type {name!r}; expected one of {', '.join(COLUMN_TYPES)}.")
    return COLUMN_TYPES[name]


def type_of(dtype) -> ColumnType:
    """The type of a pandas column of `dtype`."""
    return next(kind for kind in COLUMN_TYPES.values() if kind.matches(dtype))
