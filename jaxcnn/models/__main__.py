"""List the model zoo, or print one model's layer table.

python -m jaxcnn.models                     # every model: family, input, params, FLOPs
python -m jaxcnn.models resnet50 vit_b16    # only these
python -m jaxcnn.models --summary resnet50  # layer path, output shape, parameters
"""

from __future__ import annotations

import argparse
import sys

from jaxcnn.errors import UserError
from jaxcnn.models import get_entry, list_models
from jaxcnn.models.stats import cached_model_stats, layer_table


def _print_listing(names: list[str]) -> None:
    print("FLOPs: analytic count of the convolutions and matrix products in the traced eval-mode")
    print("forward pass (jaxpr), batch 1, default input; a multiply-add counts as 2 FLOPs.\n")
    print("| model | family | input (H×W×C) | parameters | GFLOPs |")
    print("|---|---|---|---:|---:|")
    for name in names:
        s = cached_model_stats(name)
        h, w, c = s["input_shape"]
        print(
            f"| {name} | {s['family']} | {h}×{w}×{c} | {s['params']:,} | {s['flops'] / 1e9:.3f} |",
            flush=True,
        )


def _print_summary(name: str) -> None:
    rows = layer_table(name)
    width = max(len(path) for path, _, _ in rows)
    print(f"{'layer':<{width}}  {'output shape':<20}  {'parameters':>12}")
    for path, shape, params in rows[1:]:
        print(f"{path:<{width}}  {str(shape):<20}  {params:>12,}")
    print(f"total parameters of {name} at input {get_entry(name).input_shape}: {rows[0][2]:,}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxcnn.models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", help="models to list (default: all)")
    parser.add_argument("--summary", metavar="MODEL", help="print MODEL's layer table")
    args = parser.parse_args(argv)
    try:
        if args.summary:
            _print_summary(get_entry(args.summary).name)
        else:
            _print_listing([get_entry(n).name for n in args.names] or list_models())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
