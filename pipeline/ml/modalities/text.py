"""Text on the model side: a table's inputs (one named (1,) input per column) whose free-text columns take raw
strings. The bag-of-n-grams MLP reads every column as a table model does (text as the training split's terms,
each present or not, or TF-IDF); the CNN, RNN and Transformer families read the text columns as sequences of
word embeddings (`TextVectorization` then `Embedding`, the vocabulary a SavedModel asset) and the other columns
beside their output. Requests, predict, the MLflow schema and the monitor are the table's.

On the edge the texts are vectorised outside the TFLite graph: `TextVectorization`'s string ops are not TFLite
builtins, and TFLite's Select TF ops lack the n-grams (measured in docs/benchmarks.md). The TFLite model takes each
text column's vector (its terms, or word ids) and `text_vectorization.json` beside it describes how to compute it
(`pipeline.core.tokens.vectorise`)."""

from __future__ import annotations

from pipeline.ml.modalities.table import TableModel


class TextModel(TableModel):
    kind = "text"

    def preprocess(self, spec, inputs, hyperparameters):
        """The MLP: every column as a table model reads it. The sequence families: (the text columns' word
        embeddings, one after the other, the other columns' features or None)."""
        import keras

        from pipeline.ml.features import PREPROCESSING, word_sequence_layers

        if hyperparameters.get("family", "mlp") == "mlp":
            return super().preprocess(spec, inputs, hyperparameters)
        mask = hyperparameters["family"] == "rnn"  # an RNN skips the padding; convolutions and attention see it
        texts = [feature for feature in spec.features if feature.column_type.free_text]
        sequences = [word_sequence_layers(feature, inputs[feature.name], hyperparameters, mask) for feature in texts]
        others = [
            PREPROCESSING[feature.type](feature, inputs[feature.name], hyperparameters)
            for feature in spec.features
            if not feature.column_type.free_text
        ]
        sequence = keras.layers.Concatenate(axis=1, name="words")(sequences) if len(sequences) > 1 else sequences[0]
        side = None
        if others:
            side = keras.layers.Concatenate(name="other_features")(others) if len(others) > 1 else others[0]
        return sequence, side

    def request_batch(self, instances, spec):
        """Rows of column values, or, for a model that reads one text column only, plain strings (TF Serving's
        row format for a single input)."""
        if len(spec.features) == 1 and spec.features[0].column_type.free_text:
            column = spec.features[0].column
            instances = [{column: instance} if isinstance(instance, str) else instance for instance in instances]
        return super().request_batch(instances, spec)

    def encode(self, family, body, features, hyperparameters):
        if family == "mlp":
            return super().encode(family, body, features, hyperparameters)
        import keras

        sequence, side = features
        encoded = super().encode(family, body, sequence, hyperparameters)
        return encoded if side is None else keras.layers.Concatenate(name="features")([encoded, side])

    def tflite_support(self, spec) -> tuple[bool, str]:
        return True, ""  # the text columns are vectorised outside the TFLite graph (`edge_model`)

    def edge_model(self, model, spec):
        """The model from each text column's vectoriser output on (the terms' vector, or the word ids), its other
        inputs as they are; an RNN unrolled over the fixed sequence, as TFLite's builtin ops need. Cut from a copy:
        a Functional model built on `model`'s own tensors would add nodes to its layers, and it could not be saved."""
        import keras

        from pipeline.ml.features import text_layer_names

        copy = keras.models.clone_model(model, clone_function=unroll)
        copy.set_weights(model.get_weights())
        cut = text_vectors(copy, spec, weighted=False)
        inputs = [keras.Input(tensor.shape[1:], dtype=tensor.dtype, name=name) for name, tensor in cut.items()]
        inner = keras.Model(list(cut.values()), copy.outputs)
        outside = {}
        for feature in spec.features:
            if feature.column_type.free_text:
                names = text_layer_names(feature.name)
                outside[feature.name] = vectoriser_description(first_layer(copy, [names["terms"], names["words"]]))
        return keras.Model(inputs, inner(inputs), name="edge"), outside

    def fixed_outputs(self, model, spec):
        """Each text column's vector (its terms weighted, or its word ids), the other columns' raw inputs: the
        vectorisers learn nothing, and splitting the texts and looking up their n-grams again every epoch made
        the text model's epoch 0.88 s, against 0.59 s computed once (docs/benchmarks.md)."""
        return text_vectors(model, spec, weighted=True)

    def edge_inputs(self, batch, spec, outside):
        import numpy as np

        from pipeline.core.tokens import vectorise

        converted = dict(batch)
        for name, vectoriser in outside.items():
            texts = [
                value.decode("utf-8") if isinstance(value, bytes) else str(value)
                for value in np.asarray(batch[name]).reshape(-1)
            ]
            converted[name] = vectorise(texts, vectoriser)
        return converted


def text_vectors(model, spec, weighted: bool) -> dict:
    """{input name: tensor} of `model`: each text column's vectoriser output (flattened; then `weighted` by
    `LogTfIdf` when the model weighs it so), or its word ids; each other column's raw input."""
    from pipeline.ml.features import text_layer_names

    tensors = {}
    for feature in spec.features:
        if not feature.column_type.free_text:
            tensors[feature.name] = model.get_layer(feature.name).output
            continue
        names = text_layer_names(feature.name)
        steps = [names["terms_weighted"], names["terms_flat"]] if weighted else [names["terms_flat"]]
        tensors[feature.name] = first_layer(model, [*steps, names["words"]]).output
    return tensors


def first_layer(model, names: list[str]):
    """The first of the layers `names` that `model` has: a text column's vectoriser is its terms' or its words'."""
    layers = {layer.name: layer for layer in model.layers}
    return next(layers[name] for name in names if name in layers)


def vectoriser_description(layer) -> dict:
    """What `pipeline.core.tokens.vectorise` needs to compute a `TextVectorization` layer's output."""
    import numpy as np

    config = layer.get_config()
    ngrams = config["ngrams"]
    vocabulary = [str(term) for term in layer.get_vocabulary()]
    description = {
        "output_mode": config["output_mode"],
        "standardize": "ASCII letters lower-cased, then " + r"""!"#$%&()*+,-./:;<=>?@[\]^_`{|}~'""" + " removed",
        "split": "on ASCII whitespace",
        "ngrams": max(ngrams) if isinstance(ngrams, (list, tuple)) else (ngrams or 1),
        "sequence_length": config["output_sequence_length"],
        "unknown_index": vocabulary.index("[UNK]"),
        "vocabulary": vocabulary,
    }
    if config["output_mode"] == "tf_idf":  # the layer's own weights, the unknown terms' in front (Keras' choice)
        description["idf"] = [float(weight) for weight in np.asarray(layer._lookup_layer.idf_weights_const)]
    return description


def unroll(layer):
    """A copy of `layer` (for `keras.models.clone_model`); a recurrent one unrolled."""
    config = layer.get_config()
    for wrapped in ("layer", "backward_layer"):  # Bidirectional's two recurrent layers
        if wrapped in config:
            config[wrapped]["config"]["unroll"] = True
    if "unroll" in config:
        config["unroll"] = True
    return layer.__class__.from_config(config)


MODALITY = TextModel()
