"""What every family's mapping shares: reading checkpoint files, taking each source tensor once,
the layout changes between PyTorch and Flax, and the checks that a mapping filled every jaxcnn
variable with the right shape and used every source tensor.

Layouts: PyTorch convolutions are OIHW and Flax's HWIO; PyTorch linear weights are
(out, in) and Flax's kernels (in, out); BatchNorm's ``weight``/``bias`` are Flax's ``scale``/
``bias`` parameters and its ``running_mean``/``running_var`` the ``mean``/``var`` of the
``batch_stats`` collection; LayerNorm's ``weight`` is ``scale``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxcnn.errors import UserError

TORCH_HINT = "pip install -e '.[torch]'"


def read_tensors(path: str) -> dict[str, np.ndarray]:
    """The named tensors of a checkpoint file as float32 (or integer) numpy arrays.

    ``.safetensors`` files (timm's hub format) are read with ``safetensors.numpy``, without
    torch; anything else is taken for a PyTorch pickle of a state_dict (``.pth``, ``.pt``,
    ``.bin``, torchvision's format) and read with ``torch.load(weights_only=True)``, which
    runs no code from the file.
    """
    if not os.path.isfile(path):
        raise UserError(f"checkpoint file {path!r} not found")
    tensors = _read_safetensors(path) if path.endswith(".safetensors") else _read_torch(path)
    if not tensors:
        raise UserError(f"checkpoint file {path!r} holds no tensors")
    return tensors


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise UserError(
            f"reading {path!r} (safetensors) needs the safetensors package: {TORCH_HINT}"
        ) from None
    try:
        loaded = load_file(path)
    except Exception as error:  # safetensors raises its own SafetensorError, TypeError, ...
        raise UserError(
            f"{path!r} is not a readable safetensors file: {_first_line(error)}"
        ) from None
    return {name: _as_numpy(array) for name, array in loaded.items()}


def _read_torch(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise UserError(
            f"reading {path!r} (a PyTorch file) needs torch: {TORCH_HINT} "
            "(or give a .safetensors file)"
        ) from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle of code, a truncated or foreign file
        raise UserError(
            f"{path!r} is not a weights-only PyTorch state_dict: {_first_line(error)}"
        ) from None
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        keys = ", ".join(map(str, list(loaded)[:5])) if isinstance(loaded, Mapping) else ""
        raise UserError(
            f"{path!r} holds a {type(loaded).__name__}"
            + (f" with entries {keys}" if keys else "")
            + ", not a state_dict (a dict of tensor names to tensors); save model.state_dict()"
        )
    return {
        name: _as_numpy(
            tensor.detach().float().numpy() if tensor.is_floating_point() else tensor.numpy()
        )
        for name, tensor in loaded.items()
    }


def _as_numpy(array: Any) -> np.ndarray:
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)
    return array


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


# Layout changes, PyTorch → Flax.


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """OIHW (grouped: O, I/groups, H, W) → HWIO (H, W, I/groups, O)."""
    if w.ndim != 4:
        raise ValueError("a convolution weight is 4-D")
    return w.transpose(2, 3, 1, 0)


def dense_kernel(w: np.ndarray) -> np.ndarray:
    """(out, in) → (in, out)."""
    if w.ndim != 2:
        raise ValueError("a linear weight is 2-D")
    return transposed(w)


def transposed(w: np.ndarray, rows: int = 64) -> np.ndarray:
    """``w.T`` as a C-contiguous copy, ``rows`` rows of ``w`` at a time: 3× faster than one
    copy for the 100-million-entry layers of VGG and AlexNet."""
    out = np.empty(w.shape[::-1], w.dtype)
    for i in range(0, w.shape[0], rows):
        out[:, i : i + rows] = w[i : i + rows].T
    return out


def dense_kernel_after_flatten(height: int, width: int) -> Callable[[np.ndarray], np.ndarray]:
    """(out, C·H·W) → (H·W·C, out): a linear layer on a flattened feature map, whose inputs
    PyTorch flattens from NCHW (channel-major) and jaxcnn from NHWC (channel-minor)."""

    def transform(w: np.ndarray) -> np.ndarray:
        if w.ndim != 2:
            raise ValueError("a linear weight is 2-D")
        out, features = w.shape
        channels = features // (height * width)
        if channels * height * width != features:
            raise ValueError(f"its inputs are not a {height}×{width} map")
        # Per output unit (C, H·W) → (H·W, C), then the (out, in) → (in, out) of any linear
        # layer: two cache-friendly copies instead of one 4-D transpose.
        w = w.reshape(out, channels, height * width).transpose(0, 2, 1)
        return transposed(np.ascontiguousarray(w).reshape(out, features))

    return transform


def heads_kernel(num_heads: int) -> Callable[[np.ndarray], np.ndarray]:
    """(heads·head_dim, in) → (in, heads, head_dim): a query, key or value projection."""

    def transform(w: np.ndarray) -> np.ndarray:
        return dense_kernel(w).reshape(w.shape[1], num_heads, -1)

    return transform


def heads_bias(num_heads: int) -> Callable[[np.ndarray], np.ndarray]:
    """(heads·head_dim,) → (heads, head_dim)."""
    return lambda b: b.reshape(num_heads, -1)


def heads_out_kernel(num_heads: int) -> Callable[[np.ndarray], np.ndarray]:
    """(out, heads·head_dim) → (heads, head_dim, out): the attention output projection."""

    def transform(w: np.ndarray) -> np.ndarray:
        return dense_kernel(w).reshape(num_heads, -1, w.shape[0])

    return transform


def vector(w: np.ndarray) -> np.ndarray:
    """Any shape with one non-trivial axis (ConvNeXt's (C, 1, 1) layer scale) → (C,)."""
    return w.reshape(-1)


def same(w: np.ndarray) -> np.ndarray:
    """No change of layout."""
    return w


Transform = Callable[[np.ndarray], np.ndarray]


class Conversion:
    """One conversion: the source tensors, the jaxcnn variables they fill, and the checks.

    A family's mapping calls :meth:`put` (or the layer helpers) once per jaxcnn variable, in
    the order the network computes, naming the source tensor and the layout change. Each source
    tensor may be taken once; each result must have the shape the jaxcnn model expects, else
    the conversion stops with one line naming that tensor. :meth:`finish` then checks that no
    source tensor was left over and no jaxcnn variable left empty.
    """

    def __init__(
        self,
        tensors: Mapping[str, np.ndarray],
        expected: Mapping[str, tuple[int, ...]],
        *,
        what: str,
        model: str,
    ) -> None:
        """``expected``: jaxcnn variable paths (``params/stem_conv/kernel``) → shapes;
        ``what`` names the file and source in messages, ``model`` the jaxcnn model."""
        self.tensors = tensors
        self.expected = expected
        self.what = what
        self.model = model
        self.taken: set[str] = set()
        self.out: dict[str, np.ndarray] = {}

    # What the jaxcnn model has.

    def count(self, prefix: str) -> int:
        """How many numbered children ``PREFIX1``, ``PREFIX2``, ... the jaxcnn model has at the
        top of its variables (e.g. ``count('stage2_block')``: the blocks of stage 2)."""
        found = set()
        for path in self.expected:
            top = path.split("/")[1]
            if top.startswith(prefix) and top[len(prefix) :].isdigit():
                found.add(top)
        return len(found)

    def has(self, target: str) -> bool:
        """Whether the jaxcnn model has the layer ``target`` (``stage2_block1/proj_conv``: its
        kernel) or the variable of that full path."""
        return target in self.expected or f"params/{target}/kernel" in self.expected

    # Filling it.

    def take(self, name: str) -> np.ndarray:
        """The source tensor ``name``, marked as used."""
        if name not in self.tensors:
            raise UserError(
                f"{self.what} has no tensor {name!r}, which jaxcnn's {self.model} needs: "
                f"{self._hint}"
            )
        if name in self.taken:
            raise AssertionError(f"mapping bug: source tensor {name!r} taken twice")
        self.taken.add(name)
        return self.tensors[name]

    def drop(self, name: str) -> None:
        """Mark ``name`` as knowingly unused where present (BatchNorm's batch counter)."""
        if name in self.tensors:
            self.take(name)

    def put(self, target: str, source: str, transform: Transform = same) -> None:
        """Fill the jaxcnn variable ``target`` with ``transform(source tensor)``."""
        array = self.take(source)
        self._fill(target, source, array, transform, array.shape)

    def put_parts(self, targets: list[str], source: str, transform: Transform = same) -> None:
        """Split ``source`` into ``len(targets)`` equal parts along its first axis and fill
        each target with ``transform(part)``: PyTorch's packed query/key/value projections."""
        array = self.take(source)
        parts = len(targets)
        if array.ndim == 0 or array.shape[0] % parts:
            raise self._shape_error(source, array.shape, targets[0], f"not {parts} equal parts")
        for target, part in zip(targets, np.split(array, parts), strict=True):
            self._fill(target, source, part, transform, array.shape)

    def _fill(
        self,
        target: str,
        source: str,
        array: np.ndarray,
        transform: Transform,
        source_shape: tuple[int, ...],
    ) -> None:
        if target not in self.expected:
            raise UserError(
                f"{self.what}: tensor {source!r} belongs where jaxcnn's {self.model}, as its "
                f"fields build it, has no {target}: {self._hint}"
            )
        if target in self.out:
            raise AssertionError(f"mapping bug: {target} filled twice")
        try:
            result = transform(array)
        except ValueError as error:
            raise self._shape_error(source, source_shape, target, str(error)) from None
        if tuple(result.shape) != tuple(self.expected[target]):
            raise self._shape_error(source, source_shape, target)
        self.out[target] = np.ascontiguousarray(result, dtype=np.float32)

    @property
    def _hint(self) -> str:
        return f"is it a {self.model} checkpoint, or another variant? (fields: --field NAME=VALUE)"

    def _shape_error(
        self, source: str, shape: tuple[int, ...], target: str, why: str = ""
    ) -> UserError:
        return UserError(
            f"{self.what}: tensor {source!r} has shape {tuple(shape)}"
            + (f" ({why})" if why else "")
            + f", which does not fit jaxcnn's {self.model} {target} of shape "
            f"{tuple(self.expected[target])}: {self._hint}"
        )

    # Layers.

    def conv(self, source: str, target: str, bias: bool = False) -> None:
        """``source.weight`` (and ``.bias``) → ``params/target/kernel`` (and ``bias``)."""
        self.put(f"params/{target}/kernel", f"{source}.weight", conv_kernel)
        if bias:
            self.put(f"params/{target}/bias", f"{source}.bias")

    def dense(self, source: str, target: str, kernel: Transform = dense_kernel) -> None:
        """A linear layer with bias; ``kernel`` changes the weight's layout."""
        self.put(f"params/{target}/kernel", f"{source}.weight", kernel)
        self.put(f"params/{target}/bias", f"{source}.bias")

    def batch_norm(self, source: str, target: str) -> None:
        """BatchNorm: affine parameters to ``params``, running statistics to ``batch_stats``
        (its ``num_batches_tracked`` counter has no use in jaxcnn)."""
        self.put(f"params/{target}/scale", f"{source}.weight")
        self.put(f"params/{target}/bias", f"{source}.bias")
        self.put(f"batch_stats/{target}/mean", f"{source}.running_mean")
        self.put(f"batch_stats/{target}/var", f"{source}.running_var")
        self.drop(f"{source}.num_batches_tracked")

    def layer_norm(self, source: str, target: str) -> None:
        """LayerNorm: ``weight`` → ``scale``, ``bias``."""
        self.put(f"params/{target}/scale", f"{source}.weight")
        self.put(f"params/{target}/bias", f"{source}.bias")

    def conv_bn(self, conv: str, bn: str, target: str) -> None:
        """A bias-free convolution and its BatchNorm → jaxcnn's ``ConvBNAct`` (``conv``,
        ``bn``)."""
        self.conv(conv, f"{target}/conv")
        self.batch_norm(bn, f"{target}/bn")

    def finish(self) -> dict[str, np.ndarray]:
        """The filled variables (flat paths), after checking that no source tensor was left
        over and no jaxcnn variable left empty."""
        unused = [name for name in self.tensors if name not in self.taken]
        if unused:
            raise UserError(
                f"{self.what} has {len(unused)} tensor(s) that jaxcnn's {self.model} has no "
                f"place for, first {unused[0]!r}: {self._hint}"
            )
        empty = [path for path in self.expected if path not in self.out]
        if empty:
            raise UserError(
                f"no tensor of {self.what} fills jaxcnn's {self.model} {empty[0]} "
                f"({len(empty)} variable(s) left empty): {self._hint}"
            )
        return self.out
