"""TensorFlow runtime: SavedModel signatures (TF Serving layout and REST formats) and Keras files."""
