"""The launchers' ``--dry-run`` prints exactly the commands they would run; the local launcher
relays its processes' output as one clear line per event (stand-in processes here; a real
two-process run in test_multihost.py)."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN_ARGS = ["--config", "experiments/quickstart.py", "--workdir", "/shared/runs/a b"]


def dry_run(launcher: str, *options: str) -> list[str]:
    completed = subprocess.run(
        [sys.executable, str(REPO / "launch" / launcher), *options, "--dry-run", "--", *TRAIN_ARGS],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return completed.stdout.strip().splitlines()


def test_local_starts_one_process_per_id_with_its_own_devices() -> None:
    lines = dry_run("local.py", "--num_processes=3", "--devices_per_process=2", "--port=1234")
    assert [shlex.split(line) for line in lines] == [
        [
            "JAX_PLATFORMS=cpu",
            "JAX_NUM_CPU_DEVICES=2",
            sys.executable,
            "-m",
            "jaxcnn.train",
            *TRAIN_ARGS,
            "--coordinator_address=localhost:1234",
            "--num_processes=3",
            f"--process_id={process_id}",
        ]
        for process_id in range(3)
    ]


def test_local_on_gpus_gives_each_process_a_disjoint_set() -> None:
    lines = dry_run("local.py", "--num_processes=2", "--devices_per_process=4", "--platform=gpu")
    assert [shlex.split(line)[0] for line in lines] == [
        "CUDA_VISIBLE_DEVICES=0,1,2,3",
        "CUDA_VISIBLE_DEVICES=4,5,6,7",
    ]
    ports = {shlex.split(line)[-3] for line in lines}
    assert len(ports) == 1  # one coordinator that every process dials


def _srun_line(lines: list[str]) -> int:
    (index,) = [i for i, line in enumerate(lines) if line.startswith("srun ")]
    return index


def _srun_command(lines: list[str]) -> list[str]:
    return shlex.split(lines[_srun_line(lines)].removesuffix(" &"))


def test_slurm_one_process_per_gpu() -> None:
    lines = dry_run("slurm.py", "--nodes=4", "--gpus_per_node=8", "--partition=gpu")
    assert lines[1] == "#!/bin/bash"
    for directive in ("--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--partition=gpu"):
        assert f"#SBATCH {directive}" in lines
    assert _srun_command(lines) == [
        "srun",
        "--kill-on-bad-exit=1",
        "python",
        "-m",
        "jaxcnn.train",
        *TRAIN_ARGS,
        "--distributed=on",
    ]
    assert not any("JAX_LOCAL_DEVICE_IDS" in line for line in lines)
    assert lines[-1] == "sbatch jaxcnn.sbatch"


def test_slurm_one_process_per_node_sees_all_its_gpus() -> None:
    lines = dry_run("slurm.py", "--nodes=2", "--gpus_per_node=4", "--per=node", "--setup=ml cuda")
    assert "#SBATCH --ntasks-per-node=1" in lines
    setup, devices = lines.index("ml cuda"), lines.index("export JAX_LOCAL_DEVICE_IDS=0,1,2,3")
    assert setup < devices < _srun_line(lines)


def test_slurm_checkpoints_and_requeues_before_the_time_limit() -> None:
    lines = dry_run("slurm.py", "--nodes=2", "--requeue_before=120")
    for directive in ("--signal=B:USR1@120", "--requeue", "--open-mode=append"):
        assert f"#SBATCH {directive}" in lines
    assert lines.index("trap requeue USR1") < _srun_line(lines)
    assert lines[_srun_line(lines)].endswith(" &")
    assert '  scontrol requeue "$SLURM_JOB_ID"' in lines
    plain = dry_run("slurm.py", "--requeue_before=0")
    assert not any("USR1" in line or "requeue" in line for line in plain)


@pytest.mark.timeout(60)
def test_slurm_script_forwards_the_warning_and_requeues(tmp_path) -> None:
    """Run the generated script with stand-ins for srun and scontrol: on SLURM's USR1 the
    training step gets SIGTERM (it checkpoints and exits) and the job is requeued."""
    import os
    import signal
    import time

    lines = dry_run("slurm.py", "--nodes=1")
    script = tmp_path / "job.sbatch"
    script.write_text("\n".join(lines[1:-1]) + "\n")  # between "# FILE" and the sbatch command
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(
        "#!/bin/bash\n"
        f"trap 'echo TERM > {tmp_path}/srun.log; exit 143' TERM\n"
        f"echo started > {tmp_path}/srun.log\n"
        "while true; do sleep 0.1; done\n"
    )
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" > {tmp_path}/scontrol.log\n')
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "42"}
    job = subprocess.Popen(["bash", str(script)], env=env, cwd=tmp_path)
    log = tmp_path / "srun.log"
    deadline = time.monotonic() + 30
    while not (log.exists() and log.read_text().strip() == "started"):
        assert job.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)
    assert job.wait(timeout=30) == 0
    assert log.read_text().strip() == "TERM"
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "42"]


def test_tpu_pod_installs_and_runs_on_every_worker() -> None:
    lines = dry_run("tpu_pod.py", "--tpu=pod", "--zone=us-central2-b", "--project=proj")
    archive, copy, run = (shlex.split(line) for line in lines)
    assert archive[:2] == ["git", "archive"]
    local_archive = archive[-2].removeprefix("--output=")
    assert copy[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert copy[5:7] == [local_archive, "pod:jaxcnn-src.tar.gz"]
    assert run[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"]
    for command in (copy, run):
        assert "--worker=all" in command
        assert command[command.index("--zone") + 1] == "us-central2-b"
        assert command[command.index("--project") + 1] == "proj"
    remote = run[-1].removeprefix("--command=").split(" && ")
    assert "python3 -m pip install --quiet -e '.[tpu]'" in remote
    assert shlex.split(remote[-1]) == [
        "python3",
        "-m",
        "jaxcnn.train",
        *TRAIN_ARGS,
        "--distributed=on",
    ]


# Stand-ins for the training processes: ``python -c SOURCE`` where SOURCE starts with
# ``I = <process index>`` and ``TMP = <a scratch folder>``.
GLOO_LINE = (
    "[Gloo] Rank {} is connected to 1 peer ranks. Expected number of connected peer ranks is : 1"
)
CHATTY = f"""
import sys
print({GLOO_LINE!r}.format(I))
print("step 8/20 from", I)
print({GLOO_LINE!r}.format(I), file=sys.stderr)
print({GLOO_LINE!r}.format(I).replace(" is", "\\n is", 1), file=sys.stderr)  # split by a write
print("[Gloo] Rank", I, "lost its peer", file=sys.stderr)  # not the known chatter: kept
print("a warning from", I, file=sys.stderr)
"""
# What a process prints when JAX's coordination service finds that another one died.
ABORT_REPORT = "\n".join(
    [
        "E1203 10:34:32.570981    2916 preemption_sync_manager.cc:159] Failed to cancel "
        "preemption barrier: FAILED_PRECONDITION: Tried to cancel non-existent barrier "
        "PREEMPTION_SYNC_BARRIER.",
        "E1203 10:05:21.485688   18707 coordination_service.cc:1549] [1086] Use error polling to "
        "propagate the following error to all tasks: UNAVAILABLE: The following tasks are "
        "unhealthy (stopped sending heartbeats):",
        "1",
        "The tasks have crashed. Check the task logs for an earlier error.",
        "F1203 10:05:21.486106   18718 client.h:80] Terminating process because the JAX "
        "distributed service detected fatal errors. This most likely indicates that another "
        "task died.",
        "*** Check failure stack trace: ***",
        "    @     0x7f0bc6a40634  absl::log_internal::LogMessage::SendToLog()",
        "    @     0x7f0bc6a405b6  absl::log_internal::LogMessage::Flush()",
        "Fatal Python error: Aborted",
        "",
        "Thread 0x00007f0ae8ff96c0 (most recent call first):",
        '  File "/usr/lib/python3.11/threading.py", line 982 in run',
        "",
        "Extension modules: numpy._core._multiarray_umath, jaxlib.cpu_feature_guard (total: 2)",
    ]
)
PEER_LOST_TRACEBACK = "\n".join(
    [
        "Traceback (most recent call last):",
        '  File "jaxcnn/training/parallel.py", line 45, in to_host',
        "    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)",
        "                                  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
        "jax.errors.JaxRuntimeError: UNKNOWN: Gloo all-reduce failed: "
        "[external/gloo/gloo/transport/tcp/pair.cc:547] Connection closed by peer [127.0.0.1]:1956",
    ]
)

GENUINE_TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: mine'


def killed_peer(report: str) -> str:
    """Process 1 is killed; process 0 sees it go, prints ``report`` and hangs."""
    return f"""
import os, signal, sys, time
print("step 40 from", I)
print("working", I, file=sys.stderr)
pid_file = os.path.join(TMP, "pid1")
if I == 1:
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(pid_file + ".tmp", pid_file)
    os.kill(os.getpid(), signal.SIGKILL)
while not os.path.exists(pid_file):
    time.sleep(0.01)
stat = f"/proc/{{open(pid_file).read()}}/stat"
while os.path.exists(stat) and open(stat).read().split(") ")[-1][0] != "Z":
    time.sleep(0.01)
print("a warning after the death", file=sys.stderr)
print({GENUINE_TRACEBACK!r}, file=sys.stderr)
print({report!r}, file=sys.stderr)
time.sleep(60)
"""


_TB, _ABORT = PEER_LOST_TRACEBACK.splitlines(), ABORT_REPORT.splitlines()
DEATH_REPORTS = {  # what a survivor prints, as seen in real runs
    "collective": [*_TB, *_ABORT],  # in a collective: at once; aborts at the heartbeat timeout
    "heartbeat": _ABORT,  # outside collectives (e.g. saving): at the heartbeat timeout
    "coordinator": [*_TB[:2], *_ABORT[:2], *_TB[2:], *_ABORT[2:]],  # threads interleave
}
HANGS = "import time; time.sleep(60)"
STOPS_ON_SIGNALS = """
import signal, sys, time
def stop(signum, frame):
    print("got", signal.Signals(signum).name, file=sys.stderr)
    if signum != KEEPS_GOING_ON:  # else it goes on, as if saving a checkpoint
        sys.exit(128 + signum)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
"""


def start_launch(
    tmp_path: Path, *sources: str, workdir: str = "", grace: float = 1.0
) -> subprocess.Popen:
    """``launch/local.py``'s ``run_all`` on one stand-in process per source, with
    ``DEATH_GRACE_SECONDS=grace``."""
    driver = (
        "import sys; sys.path.insert(0, sys.argv[1]); import local; "
        "local.DEATH_GRACE_SECONDS = float(sys.argv[2]); "
        "runs = [({}, [sys.executable, '-c', source]) for source in sys.argv[4:]]; "
        "sys.exit(local.run_all(runs, sys.argv[3] or None))"
    )
    sources = [
        f"I = {i}\nTMP = {str(tmp_path)!r}\n{textwrap.dedent(source)}"
        for i, source in enumerate(sources)
    ]
    return subprocess.Popen(
        [sys.executable, "-c", driver, str(REPO / "launch"), str(grace), workdir, *sources],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def launched(tmp_path: Path, *sources: str, **options) -> tuple[int, list[str], list[str]]:
    """(exit status, stdout lines, stderr lines) of :func:`start_launch` run to its end."""
    launch = start_launch(tmp_path, *sources, **options)
    try:
        out, err = launch.communicate(timeout=50)
    finally:
        launch.kill()  # the stand-ins end on their own within a minute
    return launch.returncode, out.splitlines(), err.splitlines()


@pytest.mark.timeout(60)
def test_local_prefixes_lines_with_the_process_and_leaves_out_gloo_chatter(tmp_path) -> None:
    status, out, err = launched(tmp_path, CHATTY, CHATTY)
    assert status == 0
    assert sorted(out) == ["[0] step 8/20 from 0", "[1] step 8/20 from 1"]
    assert sorted(err) == [
        "[0] [Gloo] Rank 0 lost its peer",
        "[0] a warning from 0",
        "[1] [Gloo] Rank 1 lost its peer",
        "[1] a warning from 1",
    ]
    assert launched(tmp_path, CHATTY) == (  # one process: its lines as they are
        0,
        ["step 8/20 from 0"],
        ["[Gloo] Rank 0 lost its peer", "a warning from 0"],
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("report", DEATH_REPORTS)
def test_local_reports_a_killed_process_in_one_line_without_the_others_aborts(
    tmp_path, report: str
) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    for name in ("40", "80", "120.orbax-checkpoint-tmp"):  # the last one is incomplete
        (checkpoints / name).mkdir(parents=True)
    source = killed_peer("\n".join(DEATH_REPORTS[report]))
    status, out, err = launched(tmp_path, source, source, workdir=str(tmp_path / "run"))
    assert status == 128 + signal.SIGKILL
    assert sorted(out) == ["[0] step 40 from 0", "[1] step 40 from 1"]
    death = (
        "process 1 exited with signal SIGKILL; stopping the other processes "
        "(the checkpoint at step 80 resumes with the same command)"
    )
    kept = ["working 0", "a warning after the death", *GENUINE_TRACEBACK.splitlines()]
    assert sorted(err) == sorted([*(f"[0] {line}" for line in kept), "[1] working 1", death])
    assert err.index("[1] working 1") < err.index(death)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("failing", "others", "reported"),
    [
        (  # the first to fail keeps its report; the one left waiting for it is stopped
            f"import os, sys; print({ABORT_REPORT!r}, file=sys.stderr); os.abort()",
            HANGS,
            "process 1 exited with signal SIGABRT; stopping the other processes",
        ),
        (  # it said why itself; the launcher speaks when it stops the other one
            "import sys; sys.exit('error: the data shard is unreadable')",
            HANGS,
            "process 1 exited with status 1; stopping the other processes",
        ),
        (  # every process fails alike and says why: nothing to add
            "import sys; sys.exit('error: a bad config')",
            "import sys; sys.exit('error: a bad config')",
            None,
        ),
    ],
    ids=["abort", "error", "all-alike"],
)
def test_local_keeps_the_first_failures_report_and_stops_the_others(
    tmp_path, failing: str, others: str, reported: str | None
) -> None:
    status, _, err = launched(tmp_path, others, failing, workdir=str(tmp_path / "new"))
    own = [f"[1] {line}" for line in ABORT_REPORT.splitlines()] if "abort" in failing else []
    expected = own or ["[1] error: " + failing.split("error: ")[1].rstrip("')")]
    if reported:
        expected.append(f"{reported} (no checkpoint yet: the same command starts over)")
    else:
        expected.insert(0, expected[0].replace("[1]", "[0]"))
    assert sorted(err) == sorted(expected)
    assert status == (128 + signal.SIGABRT if own else 1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("count", "sent", "keeps_going_on", "received"),
    [
        (2, ["SIGTERM"], None, ["SIGTERM"]),
        (2, ["SIGINT"], None, ["SIGTERM"]),  # Ctrl-C: they all save a checkpoint together
        (2, ["SIGINT", "SIGINT"], "SIGTERM", ["SIGTERM", "SIGINT"]),  # again: stop at once
        (1, ["SIGINT"], None, ["SIGINT"]),  # one process saves its checkpoint on SIGINT too
    ],
)
def test_local_passes_signals_on_to_every_process(
    tmp_path, count: int, sent: list[str], keeps_going_on: str | None, received: list[str]
) -> None:
    keeps_going = getattr(signal, keeps_going_on) if keeps_going_on else 0
    source = f"KEEPS_GOING_ON = {int(keeps_going)}\n{STOPS_ON_SIGNALS}"
    launch = start_launch(tmp_path, *[source] * count)
    prefixes = [f"[{i}] " for i in range(count)] if count > 1 else [""]
    try:
        ready = sorted(launch.stdout.readline() for _ in range(count))
        assert ready == [f"{prefix}ready\n" for prefix in prefixes]
        for name in sent:
            launch.send_signal(getattr(signal, name))
            time.sleep(0.5)  # handled before the next one
        _, err = launch.communicate(timeout=30)
    finally:
        launch.kill()
    assert sorted(err.splitlines()) == sorted(
        f"{prefix}got {name}" for prefix in prefixes for name in received
    )
    assert launch.returncode == 128 + getattr(signal, received[-1])
