"""Run a training job as several JAX processes on this machine, as a multi-host job would.

    python launch/local.py --num_processes 2 --devices_per_process 2 -- \
        --config experiments/quickstart.py --workdir /tmp/quickstart

Each process runs ``python -m jaxcnn.train`` with the arguments after ``--``, plus
``--coordinator_address=localhost:PORT --num_processes=N --process_id=I`` (PORT: a free one).
On CPUs each process gets ``--devices_per_process`` virtual devices; with ``--platform gpu``
each gets its own GPUs through ``CUDA_VISIBLE_DEVICES``. ``--dry-run`` prints the commands
without running them.

Output: each process's stdout and stderr are relayed line by line; with several processes each
line starts with the index of the process that printed it (``[0] ``, ``[1] ``, ...; jaxcnn
prints its progress from process 0 only). Left out: gloo's "[Gloo] Rank I is connected to N peer
ranks" lines, and what the other processes print only because one of them failed (JAX's
coordination-service errors, a collective's "Connection closed by peer" traceback, and the
abort that follows: its C++ stack, "Fatal Python error: Aborted" and Python's thread dump). The
launcher says instead, in one line, which process failed and where the run can resume:

    process 1 exited with signal SIGKILL; stopping the other processes (the checkpoint at step
    400 resumes with the same command)

It gives the others 10 s to end on their own, then kills them: none can go on without it. (A
process that exits with an error has said why itself; the line comes only if the others have
not ended within the 10 s.) Everything printed before the failure is kept, and so is the whole
report of the process that failed first.

SIGINT (Ctrl-C) and SIGTERM are passed on to every process, which save a checkpoint and stop.
Several processes do that together on SIGTERM only, so with several a first Ctrl-C reaches
them as SIGTERM, a second one as SIGINT (stop at once, without saving). Exit status: that of
the first process to fail or stop (128 + N for one killed by signal N), else 0.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

# After a stop that was asked for (SIGINT, SIGTERM), the processes save a checkpoint together;
# after this long the launcher kills any that are still running.
GRACE_SECONDS = 120.0
# After a process died, the others can only wait for it until JAX's heartbeat timeout (100 s)
# and abort; the launcher kills them after this long.
DEATH_GRACE_SECONDS = 10.0
# A process may see a peer's death (a closed connection) before the launcher has reaped the
# peer; how long it waits for that before taking such a report for a genuine one.
PEER_WAIT_SECONDS = 2.0
STOPPED_ON_REQUEST = (128 + signal.SIGINT, 128 + signal.SIGTERM)

# gloo (the CPU collectives over TCP) connecting a process to its peers: nothing to act on.
# gloo writes it in pieces, so another write may split it anywhere after "Rank N": its start
# can end a line or sit inside another one, and its end can be a line of its own.
GLOO_CHATTER = re.compile(
    r"\[Gloo\] Rank \d+( is connected to"
    r"( \d+( peer ranks\.( Expected number of connected peer ranks is : \d+)?)?)?|$)"
)
GLOO_CHATTER_END = re.compile(
    r"\s*(is connected to )?(\d+ )?(peer ranks\. ?)?"
    r"(Expected number of connected peer ranks is : \d+)?\s*"
)
# How a process starts to go down after another one died: JAX's distributed runtime (its
# coordination service and client) logging the death, a fatal log line, a check failure's C++
# stack, "Fatal Python error: Aborted", or a traceback that ends with a collective losing its
# peer. What follows, until the process ends, is the rest of that report: the log message's
# other lines, the stack, Python's thread dump.
_LOG_HEADER = r"\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ "
LOG_LINE = re.compile(rf"[IWEF]{_LOG_HEADER}[\w.]+:\d+\] ")
GOING_DOWN = re.compile(
    rf"E{_LOG_HEADER}(coordination_service\w*|preemption_\w+|client)\.(cc|h):\d+\] "
    rf"|F{_LOG_HEADER}[\w.]+:\d+\] "
    r"|\*\*\* Check failure stack trace: \*\*\*"
    r"|Fatal Python error: Aborted"
)
PEER_LOST = re.compile(r"Gloo \S+ failed: .*(Connection closed|Connection reset) by peer")
TRACEBACK = "Traceback (most recent call last):"


def free_port() -> int:
    """A TCP port that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def commands(
    train_args: list[str], *, num_processes: int, devices_per_process: int, platform: str, port: int
) -> list[tuple[dict[str, str], list[str]]]:
    """(extra environment, argv) of each process."""
    runs = []
    for process_id in range(num_processes):
        if platform == "cpu":
            env = {"JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices_per_process)}
        else:
            first = process_id * devices_per_process
            gpus = range(first, first + devices_per_process)
            env = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
        argv = [
            sys.executable,
            "-m",
            "jaxcnn.train",
            *train_args,
            f"--coordinator_address=localhost:{port}",
            f"--num_processes={num_processes}",
            f"--process_id={process_id}",
        ]
        runs.append((env, argv))
    return runs


def shell_line(env: dict[str, str], argv: list[str]) -> str:
    """The command as one copy-pasteable shell line."""
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(argv)])


class AfterPeerDeath:
    """Leaves out of one process's stderr what it prints because another process died.

    Called with each line; returns the lines to print now. From the first line that shows the
    process going down (the shapes above), once ``peer_failed(wait_seconds)`` says another
    process has ended with a failure, everything is left out: the process that fails first
    keeps its whole report, and every line before is kept. A traceback is held until its
    exception line; log lines of other threads that cut into it pass on their own.
    """

    def __init__(self, peer_failed: Callable[[float], bool]) -> None:
        self._peer_failed = peer_failed
        self._going_down = False
        self._held: list[str] = []  # a traceback so far

    def __call__(self, line: str) -> list[str]:
        if self._going_down:
            return []
        if GOING_DOWN.match(line) and self._peer_failed(0.1):
            return self._go_down()
        if LOG_LINE.match(line) or GOING_DOWN.match(line):  # from any thread: pass on at once
            return [line]
        if self._held:
            self._held.append(line)
            if line[:1].isspace():
                return []
            held, self._held = self._held, []
            if PEER_LOST.search(line) and self._peer_failed(PEER_WAIT_SECONDS):
                return self._go_down()
            return held
        if line.startswith(TRACEBACK):
            self._held = [line]
            return []
        return [line]

    def _go_down(self) -> list[str]:
        self._going_down, self._held = True, []
        return []

    def rest(self) -> list[str]:
        """What is still held when the output ends (an unfinished traceback)."""
        held, self._held = self._held, []
        return held


def workdir_of(train_args: list[str]) -> str | None:
    """The value of ``--workdir`` among the training arguments, if there."""
    workdir = None
    for arg, following in zip(train_args, [*train_args[1:], None], strict=True):
        if arg.startswith("--workdir="):
            workdir = arg.partition("=")[2]
        elif arg == "--workdir" and following is not None:
            workdir = following
    return workdir


def resume_hint(workdir: str | None) -> str:
    """Where the same command resumes: the newest complete checkpoint in ``workdir``."""
    if workdir is None:
        return ""
    try:  # orbax gives a checkpoint's folder its step as name once the checkpoint is complete
        steps = [int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit()]
    except OSError:
        steps = []
    if not steps:
        return " (no checkpoint yet: the same command starts over)"
    return f" (the checkpoint at step {max(steps)} resumes with the same command)"


def _ending(status: int) -> str:
    """How a process ended, from its return code: "status N" or "signal NAME"."""
    if status >= 0:
        return f"status {status}"
    try:
        return f"signal {signal.Signals(-status).name}"
    except ValueError:
        return f"signal {-status}"


class Launch:
    """The processes of one run, with their output relayed line by line (module docstring)."""

    def __init__(self, workdir: str | None = None) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen] = []
        self.stop_requested = False
        self._several = False
        self._interrupted = False
        self._relays: list[list[threading.Thread]] = []
        self._lock = threading.Lock()  # one line at a time on the launcher's outputs
        self._poll_lock = threading.Lock()
        self._ended: list[int] = []  # indices of the processes that ended, in that order

    def start(self, runs: list[tuple[dict[str, str], list[str]]]) -> None:
        """Start every process and the threads that relay its stdout and stderr."""
        self._several = len(runs) > 1
        for index, (env, argv) in enumerate(runs):
            # Unbuffered: lines reach the launcher as they are printed, even from a killed one.
            # In a process group of its own: a terminal's Ctrl-C reaches the launcher alone,
            # which passes it on (forward).
            env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
            process = subprocess.Popen(
                argv,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                process_group=0,
            )
            self.processes.append(process)
            prefix = f"[{index}] ".encode() if self._several else b""
            report = AfterPeerDeath(lambda wait, index=index: self.peer_failed(index, wait))
            relays = [
                threading.Thread(
                    target=self._relay, args=(pipe, target, prefix, filter_), daemon=True
                )
                for pipe, target, filter_ in (
                    (process.stdout, sys.stdout.buffer, None),
                    (process.stderr, sys.stderr.buffer, report),
                )
            ]
            for relay in relays:
                relay.start()
            self._relays.append(relays)

    def peer_failed(self, index: int, wait_seconds: float) -> bool:
        """Whether a process other than ``index`` has ended with a failure (waiting up to
        ``wait_seconds`` for one)."""
        deadline = time.monotonic() + wait_seconds
        while True:
            failed = any(s for i, s in enumerate(self.poll()) if i != index)
            if failed or time.monotonic() >= deadline:
                return failed
            time.sleep(0.05)

    def poll(self) -> list[int | None]:
        """Every process's exit status (None: still running), noting the order they end in."""
        with self._poll_lock:
            statuses = [process.poll() for process in self.processes]
            for index, status in enumerate(statuses):
                if status is not None and index not in self._ended:
                    self._ended.append(index)
        return statuses

    def say(self, message: str) -> None:
        """Print one line of the launcher's own on stderr."""
        self._write(sys.stderr.buffer, f"{message}\n".encode())

    def _write(self, target: BinaryIO, data: bytes) -> None:
        with self._lock:  # whole lines: the processes' lines never mix
            target.write(data)
            target.flush()

    def _relay(
        self,
        pipe: BinaryIO,
        target: BinaryIO,
        prefix: bytes,
        report: AfterPeerDeath | None,
    ) -> None:
        """Copy ``pipe`` to ``target`` line by line: prefixed, without gloo's chatter and
        (with ``report``) without what the process prints because another one died."""
        for raw in pipe:
            line = raw.decode(errors="surrogateescape").rstrip("\n")
            if "peer ranks" in line and GLOO_CHATTER_END.fullmatch(line):
                continue
            if GLOO_CHATTER.search(line):
                line = GLOO_CHATTER.sub("", line)
                if not line.strip():
                    continue
            for kept in report(line) if report else [line]:
                self._write(target, prefix + kept.encode(errors="surrogateescape") + b"\n")
        if report:
            for kept in report.rest():
                self._write(target, prefix + kept.encode(errors="surrogateescape") + b"\n")
        pipe.close()

    def forward(self, signum: int, frame: object) -> None:
        """Pass a stop request on to every running process (a signal handler).

        Several processes stop together only on SIGTERM (JAX's preemption notice: they save a
        checkpoint at the same step), so a first Ctrl-C reaches them as SIGTERM; another one
        as SIGINT, which stops them at once.
        """
        if signum == signal.SIGINT and self._several and not self._interrupted:
            self._interrupted, signum = True, signal.SIGTERM
        self.stop_requested = True
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signum)

    def wait(self) -> int:
        """Wait for every process, stopping the others when one dies; the exit status."""
        first_failure, death, deadline = 0, None, float("inf")
        while True:
            statuses = self.poll()
            for index in list(self._ended):  # in the order they ended, as far as known
                status = statuses[index]
                if status and not first_failure:
                    first_failure, deadline = status, time.monotonic() + GRACE_SECONDS
                asked_to_stop = self.stop_requested or status in STOPPED_ON_REQUEST
                if status and death is None and not asked_to_stop:
                    death, deadline = index, time.monotonic() + DEATH_GRACE_SECONDS
                    if status < 0:  # killed: it could not say why itself
                        self._report_death(index, statuses)
            if None not in statuses:
                break
            if time.monotonic() > deadline:
                if death is not None and statuses[death] > 0:
                    self._report_death(death, statuses)
                for process in self.processes:
                    process.kill()
                deadline = float("inf")
            time.sleep(0.2)
        for relay in (relay for relays in self._relays for relay in relays):
            relay.join(timeout=5)
        return first_failure if first_failure >= 0 else 128 - first_failure

    def _report_death(self, index: int, statuses: list[int | None]) -> None:
        for relay in self._relays[index]:  # its last lines first
            relay.join(timeout=1)
        stopping = "; stopping the other processes" if None in statuses else ""
        self.say(
            f"process {index} exited with {_ending(statuses[index])}{stopping}"
            f"{resume_hint(self.workdir)}"
        )


def run_all(runs: list[tuple[dict[str, str], list[str]]], workdir: str | None = None) -> int:
    """Start every process, relay their output, wait for all, and return the exit status: the
    first failure's (128 + N for signal N), or 0. ``workdir``: where to look for checkpoints."""
    launch = Launch(workdir)
    signal.signal(signal.SIGINT, launch.forward)
    signal.signal(signal.SIGTERM, launch.forward)
    launch.start(runs)
    return launch.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python launch/local.py",
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s [options] -- TRAIN_ARGS...",
        epilog=__doc__[__doc__.index("Output:") :],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=1)
    parser.add_argument("--platform", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--port", type=int, default=0, help="coordinator port; 0: a free one")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if args.num_processes < 1 or args.devices_per_process < 1:
        parser.error("--num_processes and --devices_per_process must be at least 1")
    runs = commands(
        train_args,
        num_processes=args.num_processes,
        devices_per_process=args.devices_per_process,
        platform=args.platform,
        port=args.port or free_port(),
    )
    if args.dry_run:
        for env, argv in runs:
            print(shell_line(env, argv))
        return
    sys.exit(run_all(runs, workdir_of(train_args)))


if __name__ == "__main__":
    main()
