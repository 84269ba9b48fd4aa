"""``python -m jaxcnn.visualize`` and its parts: the tutorial's examples, filter tiles, stage
discovery in every family, Grad-CAM, and the pictures of a trained quickstart run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_models import TINY
from test_train import quickstart_config

from jaxcnn import models
from jaxcnn.errors import UserError
from jaxcnn.pictures import cam, filters, mistakes, stages, tutorial
from jaxcnn.pictures.page import write_pictures
from jaxcnn.training.loop import train_and_evaluate
from jaxcnn.training.trained import load_trained

from conftest import run_cli, shared_workdir


def test_tutorial_examples_through_the_framework():
    # The feature map tests/test_ops.py works out by hand for the tutorial's step image.
    expected = [
        [0, 0, 0, 0, 0],
        [3, 4, 4, 4, 3],
        [3, 4, 4, 4, 3],
        [0, 0, 0, 0, 0],
        [-3, -4, -4, -4, -3],
    ]
    np.testing.assert_array_equal(tutorial.sobel_feature_map(), expected)
    np.testing.assert_array_equal(tutorial.max_pool_example(), [[6, 4], [4, 8]])


def test_filter_grid_has_one_tile_per_filter():
    kernel = np.random.default_rng(0).normal(size=(3, 2, 3, 10)).astype(np.float32)
    tiles = filters.filter_tiles(kernel)
    assert tiles.shape == (10, 3, 2, 3) and tiles.min() >= 0 and tiles.max() <= 1
    # Each tile is its own filter (colour channels kept), 0 drawn as mid-grey.
    want = kernel[..., 7] / (2 * np.abs(kernel[..., 7]).max())
    np.testing.assert_allclose(tiles[7] - 0.5, want, atol=1e-6)
    grid = filters.tile_grid(tiles, pad=1, fill=1.0)
    assert filters.grid_shape(10) == (3, 4)
    assert grid.shape == (3 * 4 + 1, 4 * 3 + 1, 3)
    for i, tile in enumerate(tiles):
        top, left = 1 + (i // 4) * 4, 1 + (i % 4) * 3
        np.testing.assert_array_equal(grid[top : top + 3, left : left + 2], tile)
    for slot in (10, 11):  # the grid's two spare slots stay blank
        top, left = 1 + (slot // 4) * 4, 1 + (slot % 4) * 3
        assert (grid[top : top + 3, left : left + 2] == 1.0).all()
    assert list(filters.strongest(kernel, 20)) == list(range(10))
    norms = np.sqrt((kernel**2).sum(axis=(0, 1, 2)))
    assert list(filters.strongest(kernel, 3)) == list(np.argsort(-norms)[:3])


@pytest.mark.parametrize("family", sorted(TINY))
def test_stages_are_found_in_every_family(family):
    """From the model alone (abstract shapes, nothing computed): stages in order of falling
    resolution, each one module's NHWC output, and the first convolution."""
    name, shape, fields = TINY[family]
    model = models.create(name, num_classes=10, conv_impl="xla", **fields)
    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    calls = stages.trace_calls(model, variables, x)
    found = stages.find_stages(calls)
    sizes = [s.spatial for s in found]
    assert found and all(len(s.output_shape) == 4 and s.output_shape[0] == 2 for s in found)
    assert all(a[0] > b[0] and a[1] > b[1] for a, b in zip(sizes, sizes[1:], strict=False))
    assert all(s.path for s in found)  # a module inside the model, never the model itself
    first = stages.first_conv(calls)
    assert first is not None and first.input_shape == (2, *shape)
    known = {
        "LeNet": ["c1", "c3"],
        "ResNet": ["stage1_block2", "stage2_block2", "stage3_block2", "stage4_block2"],
        "ViT": ["patch_embed"],
        "AlexNet": ["conv1", "conv2", "conv5"],
    }
    if family in known:
        assert [s.name for s in found] == known[family]


def test_vit_cam_reads_patch_tokens_and_position_embeddings_are_found():
    name, shape, fields = TINY["ViT"]
    model = models.create(name, num_classes=10, conv_impl="xla", **fields)
    x = jax.random.normal(jax.random.key(1), (2, *shape))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    layer = stages.cam_layer(model, variables, x)
    # The last block's output reaches the head through the class token alone; its first
    # LayerNorm's output still moves the class token through attention.
    assert (layer.call.name, layer.grid, layer.skip) == ("block2/ln1", (8, 8), 1)
    assert layer.is_tokens and layer.to_map(jnp.zeros((2, 65, 32))).shape == (2, 8, 8, 32)
    found = filters.position_embedding(variables, layer.grid)
    assert found is not None and found[0] == "pos_embedding" and found[1].shape == (8, 8, 32)
    similarity = filters.position_similarity(found[1])
    np.testing.assert_allclose(np.diagonal(similarity.reshape(64, 64)), 1.0, rtol=1e-5)


class _Brightness(nn.Module):
    """Class 0's logit is the image's mean brightness, class 1's its negative: the evidence for
    class 0 is where the image is bright, and there is none for class 1."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        pooled = nn.Conv(1, (2, 2), 2, use_bias=False, kernel_init=nn.initializers.constant(0.25))
        x = jnp.mean(pooled(x), axis=(1, 2))
        return nn.Dense(2, kernel_init=lambda *_: jnp.array([[1.0, -1.0]]))(x)


def test_grad_cam_points_at_the_evidence():
    image = np.zeros((1, 16, 16, 1), np.float32)
    image[0, 2:6, 8:14] = 1.0  # a bright bar, top right
    model = _Brightness()
    variables = model.init(jax.random.key(0), image)
    layer = stages.cam_layer(model, variables, jnp.asarray(image))
    assert layer.grid == (8, 8)
    maps, _ = cam.grad_cam(model, variables, jnp.asarray(np.concatenate([image] * 2)),
                           np.array([0, 1]), layer)  # fmt: skip
    bar = image[0, ..., 0] > 0
    assert maps[0][bar].mean() > 5 * maps[0][~bar].mean()
    peak = np.unravel_index(maps[0].argmax(), maps[0].shape)
    assert bar[peak]
    assert maps[1].max() == 0.0  # nothing supports class 1


@pytest.fixture(scope="module")
def digits_run(digits_data_dir, tmp_path_factory) -> Path:
    """One quickstart run, trained long enough to be accurate (as in test_train), shared by
    this module's tests in every pytest-xdist worker."""

    def train(workdir: Path) -> None:
        results = train_and_evaluate(
            quickstart_config(digits_data_dir, num_epochs=12.0), str(workdir)
        )
        assert results["eval"]["accuracy"] >= 0.9

    return shared_workdir(tmp_path_factory, "visualize_digits_run", train)


def test_pictures_of_a_trained_digits_model(digits_run):
    run = load_trained(str(digits_run))
    model, variables = run.setup.model, run.variables()
    predictions = mistakes.predict_split(run.setup, variables, num_mistakes=5, num_samples=4)
    results = json.loads((digits_run / "results.json").read_text())
    assert predictions.confusion.sum() == 360
    assert predictions.accuracy == pytest.approx(results["eval"]["accuracy"])
    confidences = [m.confidence for m in predictions.mistakes]
    assert 0 < len(confidences) <= 5 and confidences == sorted(confidences, reverse=True)
    assert all(m.predicted != m.label for m in predictions.mistakes)
    assert mistakes.class_names(run.setup) == [str(i) for i in range(10)]

    calls = stages.trace_calls(model, variables, jnp.asarray(predictions.samples))
    conv = stages.first_conv(calls)
    kernel = filters.conv_kernel(variables, conv)
    assert conv.name == "c1" and kernel.shape == (5, 5, 1, 6)
    assert len(filters.filter_tiles(kernel)) == 6  # one tile per learned filter

    x = jnp.asarray(predictions.samples)
    layer = stages.cam_layer(model, variables, x)
    assert layer.call.name == "c3" and not layer.is_tokens
    labels = predictions.sample_labels
    maps, logits = cam.grad_cam(model, variables, x, labels, layer)
    assert maps.shape == (4, 32, 32) and (logits.argmax(axis=1) == labels).mean() >= 0.75
    assert np.allclose(maps.max(axis=(1, 2)), 1.0)  # every true class has some evidence
    other = (labels + 1) % 10
    other_maps, _ = cam.grad_cam(model, variables, x, other, layer)
    assert np.abs(maps - other_maps).mean() > 0.05  # each class's map is its own


def _digests(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_command_draws_a_run_and_leaves_it_unchanged(digits_run, tmp_path):
    import matplotlib.image
    from sklearn.datasets import load_digits

    picture = tmp_path / "digit.png"  # an 8×8 digit as a file: resized like the dataset's
    matplotlib.image.imsave(picture, load_digits().images[0] / 16.0, cmap="gray", vmin=0, vmax=1)
    before = _digests(digits_run)

    result = run_cli("jaxcnn.visualize", f"--workdir={digits_run}", f"--image={picture}")
    assert result.returncode == 0, result.stderr
    out = digits_run / "visualize"
    written = [Path(line) for line in result.stdout.split()]
    assert written[-1] == out / "README.md" and all(p.parent == out for p in written)
    assert {p.name for p in written} >= {
        "tutorial_sobel.png", "tutorial_max_pool.png", "filters.png", "feature_maps_1.png",
        "class_maps.png", "confusion.png", "mistakes.png",
    }  # fmt: skip
    page = (out / "README.md").read_text()
    for path in written[:-1]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 100_000
        assert f"]({path.name})" in page
    assert "`digit.png`" in page and "Grad-CAM on the last spatial stage, `c3`" in page
    after = _digests(digits_run)
    assert {k: v for k, v in after.items() if not k.startswith("visualize/")} == before


def test_bad_input_is_one_line(digits_run, tmp_path):
    empty = tmp_path / "not_trained"
    empty.mkdir()
    (empty / "config.json").write_text((digits_run / "config.json").read_text())
    with pytest.raises(UserError, match=f"^{empty} has no checkpoint yet"):
        write_pictures(str(empty))
    assert list(empty.iterdir()) == [empty / "config.json"]  # nothing written
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    result = run_cli("jaxcnn.visualize", f"--workdir={digits_run}", f"--image={broken}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: cannot read image {str(broken)!r}: not a BMP, GIF, JPEG or PNG image"
    ]
