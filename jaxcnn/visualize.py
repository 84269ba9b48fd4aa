"""See what a trained network learned, as pictures:
``python -m jaxcnn.visualize --workdir DIR [--image FILE ...] [--output OUT]``.

Reads the run's latest checkpoint (the moving average of the weights where the run kept one)
and writes PNG files and a Markdown page showing them, ``README.md``, to OUT (default
``DIR/visualize``): the tutorial's Sobel and max-pool examples computed by the framework, the
first convolution's filters (for a ViT the patch embedding's, and its position-embedding
similarities), each stage's strongest feature maps and Grad-CAM class activation maps of the
``--image`` files (default: the first eval images), the eval split's confusion matrix and its
most confidently misclassified images. The run itself is left as it is.
"""

from __future__ import annotations

from absl import flags

from jaxcnn import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir (it must hold a checkpoint).")
_IMAGES = flags.DEFINE_multi_string(
    "image",
    [],
    "An image file (BMP, GIF, JPEG, PNG) to show; repeat for more. Default: the first eval images.",
)
_OUTPUT = flags.DEFINE_string("output", "", "Where to write the pictures; '' = WORKDIR/visualize.")
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    from jaxcnn.pictures.page import write_pictures

    for path in write_pictures(_WORKDIR.value, _IMAGES.value, _OUTPUT.value):
        print(path)


if __name__ == "__main__":
    cli.run(main)
