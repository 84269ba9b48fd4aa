"""Install this checkout on every worker of a Cloud TPU VM (pod slice) and train there.

    python launch/tpu_pod.py --tpu NAME --zone ZONE [--project P] -- \
        --config experiments/resnet_cifar.py --workdir /mnt/shared/runs/cifar

Three commands, run from the repository root: pack the committed source (``git archive``),
copy it to every worker (``gcloud compute tpus tpu-vm scp --worker=all``), then on every worker
unpack it, ``pip install`` it with JAX's TPU extra and run ``python -m jaxcnn.train`` with the
arguments after ``--`` and ``--distributed=on`` (JAX finds the other workers itself).
``--dry-run`` prints the commands instead. The workdir must be on storage that every worker
sees (an NFS/Filestore mount, or a bucket mounted with gcsfuse): all processes read checkpoints.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

ARCHIVE = "jaxcnn-src.tar.gz"
REMOTE_DIR = "jaxcnn"


def commands(args: argparse.Namespace, train_args: list[str]) -> list[list[str]]:
    """The commands, in order, that install and start the run on all workers."""
    where = ["--zone", args.zone, "--worker=all"]
    if args.project:
        where += ["--project", args.project]
    remote = " && ".join(
        [
            f"rm -rf ~/{REMOTE_DIR}",
            f"mkdir -p ~/{REMOTE_DIR}",
            f"tar -xzf ~/{ARCHIVE} -C ~/{REMOTE_DIR}",
            f"cd ~/{REMOTE_DIR}",
            "python3 -m pip install --quiet -e '.[tpu]'",
            shlex.join(["python3", "-m", "jaxcnn.train", *train_args, "--distributed=on"]),
        ]
    )
    return [
        ["git", "archive", "--format=tar.gz", f"--output={args.archive}", "HEAD"],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", args.archive, f"{args.tpu}:{ARCHIVE}"]
        + where,
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu, *where, f"--command={remote}"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python launch/tpu_pod.py",
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s [options] -- TRAIN_ARGS...",
    )
    parser.add_argument("--tpu", required=True, help="name of the TPU VM")
    parser.add_argument("--zone", required=True)
    parser.add_argument("--project", default="")
    parser.add_argument("--archive", default=f"/tmp/{ARCHIVE}", help="local path of the archive")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if not train_args:
        parser.error("give the training arguments after --, e.g. -- --config FILE --workdir DIR")
    for command in commands(args, train_args):
        if args.dry_run:
            print(shlex.join(command))
        elif status := subprocess.call(command):
            sys.exit(status)


if __name__ == "__main__":
    main()
