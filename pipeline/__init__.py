"""A Keras MLOps pipeline: DVC stages from raw data to a validated, tuned, tracked and served model."""

__version__ = "0.1.0"
