"""Convert a torchvision state_dict or a timm checkpoint into a jaxcnn variables file.

python -m jaxcnn.convert --from torchvision --model resnet50 FILE.pth --output resnet50.msgpack
python -m jaxcnn.convert --from timm --model vit_s16 model.safetensors --output vit_s16.msgpack
python -m jaxcnn.convert --from timm --model mobilenet_v2 --field width_mult=0.5 \\
    mobilenetv2_050.safetensors --output mobilenet_v2_050.msgpack

FILE is a file you downloaded: torchvision's .pth (read with torch, `pip install -e '.[torch]'`)
or timm's model.safetensors (no torch needed). The output holds the variables and, under
"meta", the model name and constructor fields (jaxcnn.convert.load_variables reads it).
"""

from __future__ import annotations

import argparse
import ast
import sys
import textwrap
from typing import Any

from jaxcnn.errors import UserError


def _field(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` → (name, value), the value a Python literal where it parses as one."""
    name, eq, value = text.partition("=")
    if not eq or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def _epilog() -> str:
    from jaxcnn import convert

    lines = ["models each source fills:"]
    for source in convert.SOURCES:
        names = f"{source}: {', '.join(convert.supported_models(source))}"
        lines += textwrap.wrap(names, 96, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxcnn.convert",
        description=__doc__,
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Bad arguments: one line and status 2, without argparse's usage block.
    parser.error = lambda message: parser.exit(2, f"error: {message}\n")  # type: ignore[method-assign]
    parser.add_argument(
        "--from", dest="source", required=True, metavar="SOURCE", help="torchvision or timm"
    )
    parser.add_argument("--model", required=True, help="the jaxcnn model (see below)")
    parser.add_argument("file", metavar="FILE", help="the checkpoint: .pth or .safetensors")
    parser.add_argument("--output", required=True, metavar="OUT", help="the .msgpack to write")
    parser.add_argument(
        "--field",
        action="append",
        type=_field,
        default=[],
        metavar="NAME=VALUE",
        help="a constructor field of the model that the file's variant needs (repeatable)",
    )
    args = parser.parse_args(argv)

    from jaxcnn import convert

    try:
        meta, variables = convert.convert(args.source, args.model, args.file, **dict(args.field))
        convert.save_variables(args.output, meta, variables)
    except UserError as error:
        parser.exit(2, f"error: {error}\n")
    count = sum(a.size for a in _leaves(variables.get("params", {})))
    fields = ", ".join(f"{k}={v}" for k, v in meta["fields"].items()) or "none"
    print(
        f"wrote {args.output}: jaxcnn {meta['model']} ({count:,} parameters) from {args.source} "
        f"{meta['file']}; fields: {fields}"
    )
    return 0


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in _leaves(value)]
    return [tree]


if __name__ == "__main__":
    sys.exit(main())
