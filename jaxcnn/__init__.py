"""jaxcnn: a JAX/Flax training framework for convolutional image classifiers."""

__version__ = "0.1.0"

from jaxcnn import host_memory as _host_memory

_host_memory.configure()  # before JAX starts its CPU threads: see host_memory.py
