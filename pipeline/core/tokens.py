"""Words and n-grams of a text exactly as Keras' `TextVectorization` makes them (its defaults: ASCII lower case,
punctuation stripped, split on ASCII whitespace, n-grams joined by a space), in plain Python.

The preprocess stage counts the training split's words with these (on the data engine, without TensorFlow) and
hands the vocabulary to the model's `TextVectorization` layers; `tests/code/test_text.py` checks both agree on
hostile texts. No TensorFlow.
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
