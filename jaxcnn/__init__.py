"""jaxcnn: a JAX/Flax training framework for convolutional image classifiers."""

__version__ = "0.1.0"
