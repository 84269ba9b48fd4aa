"""The tutorial operations in jaxcnn.ops against XLA's, plus two worked examples."""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import ops


def _xla_conv(image: np.ndarray, kernel: np.ndarray, stride: int, padding: int) -> np.ndarray:
    out = jax.lax.conv_general_dilated(
        jnp.asarray(image, jnp.float32)[None, :, :, None],
        jnp.asarray(kernel, jnp.float32)[:, :, None, None],
        window_strides=(stride, stride),
        padding=[(padding, padding)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    return np.asarray(out[0, :, :, 0])


@pytest.mark.parametrize(
    "shape,kernel,stride,padding",
    [
        ((5, 5), (3, 3), 1, 0),
        ((5, 5), (3, 3), 1, 1),
        ((7, 6), (3, 2), 2, 1),
        ((8, 8), (5, 5), 3, 2),
        ((6, 9), (1, 4), 2, 0),
        ((4, 4), (4, 4), 1, 3),
    ],
)
def test_conv2d_matches_xla_cross_correlation(shape, kernel, stride, padding):
    rng = np.random.default_rng(sum(shape) + stride + padding)
    image = rng.normal(size=shape)
    k = rng.normal(size=kernel)
    got = ops.conv2d(image, k, stride=stride, padding=padding)
    np.testing.assert_allclose(got, _xla_conv(image, k, stride, padding), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "shape,size,stride", list(itertools.product([(4, 4), (7, 5), (9, 8)], [2, 3], [1, 2, 3]))
)
def test_pooling_matches_flax(shape, size, stride):
    image = np.random.default_rng(size * 10 + stride).normal(size=shape)
    x = jnp.asarray(image, jnp.float32)[None, :, :, None]
    want_max = nn.max_pool(x, (size, size), strides=(stride, stride))[0, :, :, 0]
    want_avg = nn.avg_pool(x, (size, size), strides=(stride, stride))[0, :, :, 0]
    np.testing.assert_allclose(ops.max_pool2d(image, size, stride), want_max, rtol=1e-6)
    np.testing.assert_allclose(ops.avg_pool2d(image, size, stride), want_avg, rtol=1e-5, atol=1e-6)


def test_sobel_finds_the_horizontal_edge():
    # Horizontal-edge Sobel filter: bottom row minus top row, so it responds where intensity
    # changes from one row to the next. The image is dark (0) in its top two rows and bright
    # (1) below, a horizontal step edge; a left/right step would give no response inside.
    sobel = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
    image = np.array([[0] * 5] * 2 + [[1] * 5] * 3)
    # By hand, with zero padding 1: out[i, j] = S(row i+1) - S(row i-1), where S sums a row's
    # pixels j-1, j, j+1 weighted 1, 2, 1: 4 inside a bright row, 3 at its ends (one
    # neighbour is padding), 0 for a dark row or the padding. Rows 1 and 2 straddle the edge;
    # row 4's negative response comes from the zero padding below the bright image.
    expected = np.array(
        [
            [0, 0, 0, 0, 0],
            [3, 4, 4, 4, 3],
            [3, 4, 4, 4, 3],
            [0, 0, 0, 0, 0],
            [-3, -4, -4, -4, -3],
        ]
    )
    np.testing.assert_array_equal(ops.conv2d(image, sobel, stride=1, padding=1), expected)
    np.testing.assert_allclose(_xla_conv(image, sobel, 1, 1), expected)


def test_two_by_two_max_and_average_pooling_example():
    image = np.array([[1, 3, 2, 4], [5, 6, 1, 2], [4, 2, 8, 1], [3, 4, 5, 7]])
    np.testing.assert_array_equal(ops.max_pool2d(image, 2, 2), [[6, 4], [4, 8]])
    np.testing.assert_array_equal(ops.avg_pool2d(image, 2, 2), [[3.75, 2.25], [3.25, 5.25]])


def test_output_size_formula():
    assert ops.output_size(5, 3, 1, 1) == 5  # "same" padding
    assert ops.output_size(224, 7, 2, 3) == 112  # ResNet stem
    assert ops.output_size(4, 2, 2) == 2
