"""Native kernels that jaxcnn calls from inside compiled XLA programs (XLA FFI custom calls).

Each kernel module builds its shared library at a known moment (``load()``: when a model that
uses it is built, or with ``python -m jaxcnn.kernels``), registers it with XLA, and reports
once why it cannot run where it cannot. Models never build anything while they are traced.
"""
