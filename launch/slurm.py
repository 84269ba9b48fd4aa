"""Submit a multi-node GPU training job to SLURM.

    python launch/slurm.py --nodes 2 --gpus_per_node 8 [--per node|gpu] \
        [--partition P] [--time 24:00:00] [--setup 'source .venv/bin/activate'] -- \
        --config experiments/resnet_cifar.py --workdir /shared/runs/cifar

Writes an sbatch script and submits it with ``sbatch``; ``--dry-run`` prints the script and the
command instead. ``srun`` starts ``python -m jaxcnn.train`` once per GPU (``--per gpu``, the
default) or once per node (``--per node``, each process driving all GPUs of its node) with
``--distributed=on``: JAX reads the process layout and the coordinator (the first node) from
SLURM's variables. The workdir
must be on a filesystem that every node sees, since all processes read the checkpoints.

Time limits: SLURM signals the job ``--requeue_before`` seconds (default 300) before its limit;
the script then sends SIGTERM to the training processes, which save a checkpoint and exit, and
requeues the job, which resumes from that checkpoint under the same job id (logs append).
``--requeue_before=0`` turns this off.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys


def batch_script(args: argparse.Namespace, train_args: list[str]) -> str:
    """The sbatch script that runs ``jaxcnn.train`` with ``train_args`` on every task."""
    tasks_per_node = args.gpus_per_node if args.per == "gpu" else 1
    directives = {
        "job-name": args.job_name,
        "nodes": args.nodes,
        "ntasks-per-node": tasks_per_node,
        "gpus-per-node": args.gpus_per_node,
        "cpus-per-task": args.cpus_per_task,
        "time": args.time,
        "output": f"{args.job_name}-%j.out",
    }
    if args.requeue_before:
        # B: signals the batch shell only; it forwards SIGTERM to the job step itself.
        directives["signal"] = f"B:USR1@{args.requeue_before}"
        directives["requeue"] = None
        directives["open-mode"] = "append"
    if args.partition:
        directives["partition"] = args.partition
    if args.account:
        directives["account"] = args.account
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH --{k}" + ("" if v is None else f"={v}") for k, v in directives.items()),
        "",
    ]
    lines.append("set -euo pipefail")
    if args.setup:
        lines.append(args.setup)
    if args.per == "node":
        # Without this JAX gives each SLURM task one GPU (the one of its local task index).
        gpus = ",".join(str(i) for i in range(args.gpus_per_node))
        lines.append(f"export JAX_LOCAL_DEVICE_IDS={gpus}")
    train = shlex.join(["python", "-m", "jaxcnn.train", *train_args, "--distributed=on"])
    # --kill-on-bad-exit: if one task fails, SLURM ends the others at once.
    srun = f"srun --kill-on-bad-exit=1 {train}"
    if not args.requeue_before:
        lines.append(srun)
        return "\n".join(lines) + "\n"
    lines += [
        "requeue() {",
        '  echo "jaxcnn: time limit near; checkpointing, then requeueing job $SLURM_JOB_ID"',
        '  kill -TERM "$train_pid"',
        '  wait "$train_pid" || true',
        '  scontrol requeue "$SLURM_JOB_ID"',
        "  exit 0",
        "}",
        "trap requeue USR1",
        f"{srun} &",
        "train_pid=$!",
        'wait "$train_pid"',
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python launch/slurm.py",
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s [options] -- TRAIN_ARGS...",
    )
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus_per_node", type=int, default=8)
    parser.add_argument(
        "--per", choices=("gpu", "node"), default="gpu", help="one process per GPU or per node"
    )
    parser.add_argument("--cpus_per_task", type=int, default=8)
    parser.add_argument("--time", default="24:00:00", help="time limit, HH:MM:SS")
    parser.add_argument(
        "--requeue_before",
        type=int,
        default=300,
        help="seconds before the time limit to checkpoint and requeue; 0 = off",
    )
    parser.add_argument("--partition", default="")
    parser.add_argument("--account", default="")
    parser.add_argument("--job_name", default="jaxcnn")
    parser.add_argument("--setup", default="", help="shell line run first, e.g. a venv activation")
    parser.add_argument("--script", default="jaxcnn.sbatch", help="where to write the script")
    parser.add_argument("--dry-run", action="store_true", help="print the script and command only")
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if not train_args:
        parser.error("give the training arguments after --, e.g. -- --config FILE --workdir DIR")
    script = batch_script(args, train_args)
    submit = ["sbatch", args.script]
    if args.dry_run:
        print(f"# {args.script}\n{script}")
        print(shlex.join(submit))
        return
    with open(args.script, "w", encoding="utf-8") as f:
        f.write(script)
    sys.exit(subprocess.call(submit))


if __name__ == "__main__":
    main()
