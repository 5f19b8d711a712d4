"""Infrastructure without TensorFlow: errors, configuration, the stage runner, atomic outputs, tracking."""
