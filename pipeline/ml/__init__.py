"""Keras: features, models, the search space, distribution strategies, training and evaluation helpers."""
