"""Words and n-grams of a text exactly as Keras' `TextVectorization` makes them (its defaults: ASCII lower case,
punctuation stripped, split on ASCII whitespace, n-grams joined by a space), in plain Python.

The preprocess stage counts the training split's words with these (on the data engine, without TensorFlow) and
hands the vocabulary to the model's `TextVectorization` layers; `tests/code/test_text.py` checks both agree on
hostile texts. `vectorise` is the layer's output computed the same way: what an app runs before a text model's
TFLite file, whose graph cannot hold the layer. No TensorFlow.
"""

from __future__ import annotations

import re

# keras.layers.TextVectorization's DEFAULT_STRIP_REGEX, and tf.strings.lower (ASCII only) and tf.strings.split
PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
ASCII_WHITESPACE = re.compile(r"[ \t\n\v\f\r]+")
ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def words(text: str) -> list[str]:
    """The words of `text`: lower-cased (ASCII letters only), punctuation stripped, split on whitespace."""
    return [word for word in ASCII_WHITESPACE.split(PUNCTUATION.sub("", text.translate(ASCII_LOWER))) if word]


def terms(text: str, ngrams: int) -> list[str]:
    """The words of `text` and its n-grams up to `ngrams` words, joined by a space (in TextVectorization's order)."""
    found = words(text)
    result = list(found)
    for size in range(2, ngrams + 1):
        result += [" ".join(found[start : start + size]) for start in range(len(found) - size + 1)]
    return result


def vectorise(texts: list[str], vectoriser: dict):
    """Texts as the model's `TextVectorization` layer outputs them, from its description (the export stage's
    `models/edge/text_vectorization.json`, what an app computes before the TFLite model): for `multi_hot`, 1 for
    each vocabulary term in the text (for any unknown term at `unknown_index`), else 0; for `count`, each term's
    count, every unknown term counted at `unknown_index` (a `log_tf_idf` model weights them in its TFLite graph);
    for `tf_idf`, those counts times each term's idf; for `int`, each word's
    index (`unknown_index` if unknown), cut or padded with 0 to `sequence_length`."""
    import numpy as np

    vocabulary = vectoriser["vocabulary"]
    index = {term: position for position, term in enumerate(vocabulary)}
    unknown = vectoriser["unknown_index"]
    if vectoriser["output_mode"] in ("tf_idf", "multi_hot", "count"):
        counts = np.zeros((len(texts), len(vocabulary)), dtype=np.float32)
        for row, text in enumerate(texts):
            for term in terms(text, vectoriser["ngrams"]):
                counts[row, index.get(term, unknown)] += 1
        if vectoriser["output_mode"] == "multi_hot":
            return (counts > 0).astype(np.float32)
        if vectoriser["output_mode"] == "count":
            return counts
        return counts * np.asarray(vectoriser["idf"], dtype=np.float32)
    length = vectoriser["sequence_length"]
    ids = np.zeros((len(texts), length), dtype=np.int64)
    for row, text in enumerate(texts):
        found = [index.get(word, unknown) for word in words(text)[:length]]
        ids[row, : len(found)] = found
    return ids
