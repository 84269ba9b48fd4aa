"""All the pictures of one run, and the Markdown page that shows them: ``write_pictures``.

The run is read with ``training.trained.load_trained`` (its latest checkpoint, the moving
average of the weights where the run kept one); nothing in the workdir changes except the
output folder, by default ``WORKDIR/visualize``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from jaxcnn.pictures import cam, draw, filters, images, mistakes, stages, tutorial
from jaxcnn.plots import plot_confusion_matrix
from jaxcnn.training.trained import TrainedRun, load_trained

PAGE_FILE = "README.md"
MAX_FILTERS = 64  # filter tiles drawn at most (the strongest, beyond that)
CHANNELS_PER_STAGE = 8
NUM_SAMPLES = 3  # eval images for feature maps and class activation maps without --image


@dataclasses.dataclass
class Page:
    """A Markdown page of sections, each a heading, pictures and captions."""

    title: str
    intro: str
    sections: list[tuple[str, list[tuple[str, str]]]] = dataclasses.field(default_factory=list)

    def add(self, heading: str, path: str, caption: str) -> None:
        if not self.sections or self.sections[-1][0] != heading:
            self.sections.append((heading, []))
        self.sections[-1][1].append((os.path.basename(path), caption))

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", self.intro, ""]
        for heading, pictures in self.sections:
            lines += [f"## {heading}", ""]
            for name, caption in pictures:
                lines += [f"![{name}]({name})", "", caption, ""]
        return "\n".join(lines)


def _tutorial(output: str, page: Page) -> list[str]:
    heading = "The operations, by hand"
    sobel = draw.tutorial_sobel(
        tutorial.STEP_IMAGE,
        tutorial.SOBEL,
        tutorial.sobel_feature_map(),
        os.path.join(output, "tutorial_sobel.png"),
    )
    page.add(
        heading,
        sobel,
        "The tutorial's example, run through the convolution every model here builds "
        "(`Layers.conv`): the horizontal-edge Sobel filter answers +3/+4 on the two rows that "
        "straddle the dark-to-bright edge, 0 on flat rows, and −3/−4 on the last row, where "
        "the zero padding below the image makes a bright-to-dark edge.",
    )
    pool = draw.tutorial_max_pool(
        tutorial.POOL_IMAGE,
        tutorial.max_pool_example(),
        os.path.join(output, "tutorial_max_pool.png"),
    )
    page.add(
        heading,
        pool,
        "2×2 max pooling with stride 2 (`flax.linen.max_pool`): each output keeps the largest "
        "of its window, [[6, 4], [4, 8]]; the map halves in size and keeps the strongest "
        "responses.",
    )
    return [sobel, pool]


def _filters(run: TrainedRun, calls: list[stages.ModuleCall], output: str, page: Page):
    conv = stages.first_conv(calls)
    if conv is None:
        return []
    variables = run.variables()
    kernel = filters.conv_kernel(variables, conv)
    chosen = filters.strongest(kernel, MAX_FILTERS)
    grid = filters.tile_grid(filters.filter_tiles(kernel[..., chosen]))
    height, width, channels, count = kernel.shape
    found = filters.position_embedding(variables, stages.find_stages(calls)[-1].spatial)
    # A convolution followed by learned position embeddings is a transformer's patch embedding.
    what = "patch-embedding filters" if found else "filters of the first convolution"
    shown = f"all {count}" if len(chosen) == count else f"the {len(chosen)} of {count} largest"
    path = draw.filter_grid(
        grid,
        f"{conv.name}: {count} × {height}×{width}×{channels}",
        os.path.join(output, "filters.png"),
    )
    page.add(
        "First-layer filters",
        path,
        f"The {what} (`{conv.name}`), {shown}, one tile per filter in "
        + ("colour (RGB)" if channels == 3 else "grey")
        + ": mid-grey is a zero weight, each tile scaled to its own largest weight.",
    )
    paths = [path]
    if found is not None:
        name, table = found
        path = draw.position_similarity(
            filters.position_similarity(table), os.path.join(output, "position_similarity.png")
        )
        page.add(
            "First-layer filters",
            path,
            f"Learned position embeddings (`{name}`): the small map at each patch position is "
            "the cosine similarity of that position's embedding to every position's (nearby "
            "positions, rows and columns come out similar when the model learned the 2-D "
            "layout).",
        )
        paths.append(path)
    return paths


def _feature_maps(run, calls, inputs, shown, names, output, page) -> list[str]:
    found = stages.find_stages(calls)
    outputs = [
        np.asarray(o)
        for o in stages.stage_outputs(run.setup.model, run.variables(), jnp.asarray(inputs), found)
    ]
    paths = []
    for i, name in enumerate(names):
        rows = []
        for stage, out in zip(found, outputs, strict=True):
            maps = out[i]
            strength = np.abs(maps).mean(axis=(0, 1))
            channels = np.argsort(-strength, kind="stable")[:CHANNELS_PER_STAGE]
            label = f"{stage.name}\n{maps.shape[0]}×{maps.shape[1]}×{maps.shape[2]}"
            rows.append((label, maps, channels))
        path = draw.feature_maps(shown[i], rows, os.path.join(output, f"feature_maps_{i + 1}.png"))
        page.add(
            "Feature maps",
            path,
            f"{name}: the output of each stage, its channels of largest mean absolute "
            f"activation (at most {CHANNELS_PER_STAGE}), each scaled to its own range (bright: "
            "strong).",
        )
        paths.append(path)
    return paths


def _class_maps(run, inputs, shown, labels, class_names, output, page) -> list[str]:
    model, variables = run.setup.model, run.variables()
    x = jnp.asarray(inputs)
    layer = stages.cam_layer(model, variables, x)
    logits = np.asarray(model.apply(variables, x, train=False))
    predicted = logits.argmax(axis=1)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    known = labels is not None
    classes = np.concatenate([predicted, labels]) if known else predicted
    maps, _ = cam.grad_cam(
        model, variables, jnp.concatenate([x, x]) if known else x, classes, layer
    )
    rows = []
    for i in range(len(inputs)):
        p = predicted[i]
        row = [(maps[i], f"predicted {class_names[p]} ({probabilities[i, p]:.2f})")]
        if known:
            row.append((maps[len(inputs) + i], f"true {class_names[labels[i]]}"))
        rows.append(row)
    path = draw.class_maps(shown, rows, os.path.join(output, "class_maps.png"))
    where = (
        f"the patch tokens of `{layer.call.name}` ({layer.grid[0]}×{layer.grid[1]} patches; "
        "the last token sequence whose patch tokens still reach the class token: the input "
        "of the last attention)"
        if layer.is_tokens
        else f"the last spatial stage, `{layer.call.name}` ({layer.grid[0]}×{layer.grid[1]})"
    )
    page.add(
        "Class activation maps",
        path,
        f"Grad-CAM on {where}, upsampled to the image: where the features that raise the "
        "class's score lie, for the predicted class"
        + (" and for the true class" if known else "")
        + " (red: most).",
    )
    return [path]


def _mistakes(predictions, spec, class_names, output, page) -> list[str]:
    heading = "Mistakes"
    total = int(predictions.confusion.sum())
    path = os.path.join(output, "confusion.png")
    plot_confusion_matrix(
        predictions.confusion,
        class_names,
        path,
        f"{total} eval images, accuracy {predictions.accuracy:.2%}",
    )
    page.add(heading, path, "Confusion matrix of the eval split: rows true, columns predicted.")
    paths = [path]
    if predictions.mistakes:
        shown = images.to_display(np.stack([m.image for m in predictions.mistakes]), spec)
        titles = [
            f"pred {class_names[m.predicted]} ({m.confidence:.2f})\ntrue {class_names[m.label]}"
            for m in predictions.mistakes
        ]
        path = draw.gallery(shown, titles, os.path.join(output, "mistakes.png"))
        page.add(
            heading,
            path,
            f"The {len(titles)} most confidently misclassified eval images, most confident "
            "first: the predicted class with its probability, and the true class.",
        )
        paths.append(path)
    return paths


def write_pictures(workdir: str, image_paths: Sequence[str] = (), output: str = "") -> list[str]:
    """Draw the pictures of the run in ``workdir`` (feature maps and class activation maps of
    ``image_paths``, or of the first eval images) into ``output`` (default
    ``WORKDIR/visualize``) with a Markdown page; returns the paths written, the page last."""
    decoded = images.read_images(image_paths)
    run = load_trained(workdir)
    setup = run.setup
    spec = images.preprocessing(setup)
    given = images.model_inputs(decoded, spec) if decoded else None
    output = output or os.path.join(workdir, "visualize")
    os.makedirs(output, exist_ok=True)
    weights = "moving average of the weights" if run.has_ema else "trained weights"
    page = Page(
        f"What {setup.config.model.name} learned",
        f"The run in `{workdir}` at step {run.step} ({weights}), on "
        f"{setup.info.name} ({setup.info.image_shape[0]}×{setup.info.image_shape[1]}×"
        f"{setup.info.image_shape[2]}, {setup.info.num_classes} classes).",
    )
    names = mistakes.class_names(setup)
    predictions = mistakes.predict_split(setup, run.variables(), num_samples=NUM_SAMPLES)
    if given is not None:
        inputs, labels = given, None
        titles = [f"`{os.path.basename(p)}`" for p in image_paths]
    else:
        inputs, labels = predictions.samples, predictions.sample_labels
        titles = [f"Eval image {i + 1} (class {names[y]})" for i, y in enumerate(labels)]
    shown = images.to_display(inputs, spec)
    calls = stages.trace_calls(setup.model, run.variables(), jnp.asarray(inputs))
    paths = _tutorial(output, page)
    paths += _filters(run, calls, output, page)
    paths += _feature_maps(run, calls, inputs, shown, titles, output, page)
    paths += _class_maps(run, inputs, shown, labels, names, output, page)
    paths += _mistakes(predictions, spec, names, output, page)
    page_path = os.path.join(output, PAGE_FILE)
    with open(page_path, "w", encoding="utf-8") as f:
        f.write(page.markdown())
    return [*paths, page_path]
