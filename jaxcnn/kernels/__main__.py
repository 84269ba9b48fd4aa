"""Build and check the native kernels: ``python -m jaxcnn.kernels``.

Training runs build them at start-up when they need them; this does it ahead of time (e.g. in a
container image or before a cluster job) and says whether each one can run here. Exit status 1
when one cannot.
"""

from __future__ import annotations

import argparse
import sys

from jaxcnn.kernels import onednn


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m jaxcnn.kernels", description=__doc__.split("\n\n")[1]
    ).parse_args(argv)
    reason = onednn.load()
    if reason:
        print(f"oneDNN convolutions: unavailable: {reason}")
        return 1
    print(f"oneDNN convolutions: ready (cached in {onednn.kernel_dir()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
