"""Run an experiment's sweep: ``python -m jaxcnn.sweep --config FILE --workdir DIR``.

The experiment file's ``get_sweep()`` (no argument) lists the points; ``get_config()`` (or
``get_config(ARG)`` for ``FILE:ARG``) is the base config that every point overrides. Each point
trains in ``DIR/<its overrides>``: one after another by default, ``--parallel N`` at a time, or
not at all with ``--print_commands``, which prints one launch command per unfinished point for a
cluster. ``--config.FIELD=VALUE`` overrides apply to every point (e.g. the offline dataset).
Re-running skips finished points and resumes unfinished ones from their checkpoints; then
``python -m jaxcnn.report DIR`` compares them.

This file is the command line only: :mod:`jaxcnn.sweep_grid` declares the points and
:mod:`jaxcnn.sweep_runner` plans and trains them.
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from jaxcnn import cli, sweep_runner

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file with get_config() and get_sweep(), optionally FILE:ARG."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory: one sub-directory per point.")
_PARALLEL = flags.DEFINE_integer(
    "parallel", 1, "How many points to train at the same time on this machine.", lower_bound=1
)
_PRINT_COMMANDS = flags.DEFINE_bool(
    "print_commands", False, "Print one launch command per unfinished point instead of training."
)
_LAUNCHER = flags.DEFINE_string(
    "launcher",
    "",
    "Prefix of each printed command, e.g. 'srun --nodes 1 --gpus-per-node 8'; '' = run it "
    "directly.",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    config_spec = config_flags.get_config_filename(flags.FLAGS["config"])
    common = config_flags.get_override_values(flags.FLAGS["config"])
    sweep_file = config_spec.partition(":")[0]
    workdir = os.path.abspath(_WORKDIR.value)
    points = sweep_runner.plan(
        _CONFIG.value, cli.load_config_file(sweep_file, "get_sweep"), workdir
    )

    if _PRINT_COMMANDS.value:
        for point in points:
            if point.finished:
                print(f"# finished: {point.name}")
            else:
                command = sweep_runner.train_command(config_spec, point, common, python="python")
                print(sweep_runner.shell_command(command, _LAUNCHER.value))
        return

    sweep_runner.write_manifest(config_spec, common, points)
    commands = {p.name: sweep_runner.train_command(config_spec, p, common) for p in points}
    print(f"{len(points)} points in {workdir}", flush=True)
    failed = sweep_runner.run(points, commands, parallel=_PARALLEL.value)
    if failed:
        names = ", ".join(p.name for p in failed)
        print(f"error: {len(failed)} of {len(points)} points failed: {names}", file=sys.stderr)
        sys.exit(1)
    print(f"all {len(points)} points finished; compare them: python -m jaxcnn.report {workdir}")


if __name__ == "__main__":
    cli.run(main)
