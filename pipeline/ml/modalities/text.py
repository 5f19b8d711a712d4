"""Text on the model side: a table's inputs (one named (1,) input per column) whose free-text columns take raw
strings. The bag-of-n-grams MLP reads every column as a table model does (text as TF-IDF over the training
split's terms); the CNN, RNN and Transformer families read the text columns as sequences of word embeddings
(`TextVectorization` then `Embedding`, the vocabulary a SavedModel asset) and the other columns beside their
output. Requests, predict, the MLflow schema and the monitor are the table's."""

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


MODALITY = TextModel()
