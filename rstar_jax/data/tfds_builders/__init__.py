"""tensorflow-datasets builders (array_record, no TensorFlow needed)."""
