"""Where a train step's time goes: jaxcnn's step and its PyTorch twin, by kind of operation.

    python -m benchmarks.step_profile --models vit_s16,airbench94
    python -m benchmarks.step_profile --models resnet50 --dtype bfloat16
    python -m benchmarks.step_profile --quick --models resnet20    # smoke run (batch 8)

Each framework profiles ``--steps`` train steps of the case ``benchmarks.train_step`` times
(same model, batch and step), after a warm-up call, in its own fresh process:

- jaxcnn: a ``jax.profiler`` trace of its compiled step with XLA:CPU's per-operation events on
  (``--xla_cpu_enable_xprof_traceme``). Every event is one HLO instruction, which the compiled
  program ties to the JAX operation and Flax module that made it (its ``op_name``).
- PyTorch: ``torch.profiler`` over the same steps; every ATen operator's self time, in the
  phase (forward, backward, update) during which it ran.

Both are sorted into the same kinds of operation (:data:`KINDS`) and phases, in milliseconds
per step of busy time. XLA:CPU may run independent operations at once, so jaxcnn's busy time
can exceed its wall time, which is reported beside it; the tracing itself costs a little.
Results: ``benchmarks/results/step_profile_cpu_<dtype>.json``.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path

from benchmarks import rounds
from benchmarks.train_step import CASES, DTYPES, RESULTS, jaxcnn_step
from jaxcnn import hardware
from jaxcnn.errors import UserError, unknown_choice

KINDS = (
    "convolution",
    "matmul",
    "normalization",
    "pooling",
    "data movement",
    "elementwise and other",
)
PHASES = ("forward", "backward", "update", "unattributed")
TOP_OPERATIONS = 30  # the JSON keeps the costliest operations (op_name) of each framework
TRACEME_FLAG = "--xla_cpu_enable_xprof_traceme=true"

# HLO: the opcodes that only move or reshape data, and those that contain other instructions
# (a loop's or call's events enclose those of its body: only the leaves are counted).
_MOVEMENT_OPCODES = {
    "broadcast", "concatenate", "copy", "dynamic-slice", "dynamic-update-slice", "gather",
    "pad", "reshape", "reverse", "scatter", "slice", "transpose",
}  # fmt: skip
_CONTAINER_OPCODES = {"while", "call", "conditional", "async-start", "async-done"}
# A Flax module that normalises (jaxcnn's names: bn, stem_bn, proj_bn, norm, ln1, final_norm)
# or convolves depthwise as a sum over taps (EfficientNet's ``depthwise``).
_NORM_MODULE = re.compile(r"(^|_)(bn|ln|norm)\d*$")
_CONV_MODULE = re.compile(r"depthwise")
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[^\s=]+) = .*? (?P<opcode>[a-z][a-z0-9\-]*)\((?P<rest>.*)$"
)
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?(?P<name>[^\s(]+) .*\{\s*$")


def hlo_instructions(hlo_text: str) -> dict[str, dict]:
    """name: {opcode, op_name, calls, target} of every instruction of a compiled HLO module,
    and ``opcodes``: the opcodes inside each fusion (its called computation, recursively)."""
    instructions, computations, current = {}, collections.defaultdict(list), None
    for line in hlo_text.splitlines():
        if (match := _COMPUTATION.match(line)) and " = " not in line:
            current = match.group("name")
            continue
        if not (match := _INSTRUCTION.match(line)):
            continue
        rest = match.group("rest")
        op_name = re.search(r'op_name="([^"]*)"', rest)
        calls = re.search(r"calls=%?([^\s,}]+)", rest)
        target = re.search(r'custom_call_target="([^"]*)"', rest)
        instructions[match.group("name")] = {
            "opcode": match.group("opcode"),
            "op_name": op_name.group(1) if op_name else "",
            "calls": calls.group(1) if calls else None,
            "target": target.group(1) if target else None,
        }
        computations[current].append(match.group("name"))

    def opcodes(computation: str | None, seen: frozenset = frozenset()) -> set[str]:
        found = set()
        for name in computations.get(computation, ()):
            found.add(instructions[name]["opcode"])
            if (called := instructions[name]["calls"]) and called not in seen:
                found |= opcodes(called, seen | {called})
        return found

    for instruction in instructions.values():
        instruction["opcodes"] = opcodes(instruction["calls"]) | {instruction["opcode"]}
    return instructions


def jaxcnn_phase(op_name: str) -> str:
    """forward (inside the differentiated function), backward (its transpose), update (the
    optimizer and metrics, outside it) or unattributed (an instruction XLA made that carries
    no JAX operation's name)."""
    if not op_name:
        return "unattributed"
    if "transpose(" in op_name:
        return "backward"
    return "forward" if "jvp(" in op_name else "update"


def jaxcnn_kind(instruction: dict) -> str:
    """The kind (:data:`KINDS`) of one HLO instruction of jaxcnn's step."""
    opcodes = instruction["opcodes"]
    modules = [part for part in instruction["op_name"].split("/") if "(" not in part]
    module = modules[-2] if len(modules) > 1 else ""  # the last part is the JAX primitive
    if instruction["target"] == "jaxcnn_onednn_conv" or "convolution" in opcodes:
        return "convolution"
    if "dot" in opcodes:
        return "matmul"
    if _CONV_MODULE.search(module):
        return "convolution"
    if _NORM_MODULE.search(module):
        return "normalization"
    if opcodes & {"reduce-window", "select-and-scatter"}:
        return "pooling"
    if instruction["opcode"] in _MOVEMENT_OPCODES:
        return "data movement"
    return "elementwise and other"


def torch_kind(op: str) -> str:
    """The kind (:data:`KINDS`) of one ATen operator."""
    op = op.removeprefix("aten::")
    if "conv" in op:
        return "convolution"
    if re.search(r"(^|_)(mm|addmm|bmm|baddbmm|linear|matmul|dot|scaled_dot_product)", op):
        return "matmul"
    if "norm" in op:
        return "normalization"
    if "pool" in op:
        return "pooling"
    movement = ("copy", "contiguous", "clone", "cat", "pad", "transpose", "permute", "to")
    if op.lstrip("_").startswith(movement) or op in {"fill_", "zero_", "empty", "empty_like"}:
        return "data movement"
    return "elementwise and other"


def profile_jaxcnn(spec: dict) -> dict:
    """Child mode: trace jaxcnn's step, busy ms per step by (phase, kind) and wall ms/step."""
    import jax

    runner = jaxcnn_step(spec["case"], spec["batch"], spec["dtype"])
    instructions = hlo_instructions(runner.program.as_text())
    runner.run(1)  # warm-up
    calls = math.ceil(spec["steps"] / runner.steps_per_call)
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        start = time.perf_counter()
        runner.run(calls)
        wall = time.perf_counter() - start
        jax.profiler.stop_trace()
        (trace,) = Path(trace_dir).rglob("perfetto_trace.json.gz")
        events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    steps = calls * runner.steps_per_call
    busy, by_operation = collections.defaultdict(float), collections.defaultdict(float)
    for event in events:
        instruction = instructions.get(event.get("name", ""))
        if event.get("ph") != "X" or not instruction:
            continue
        if instruction["opcode"] in _CONTAINER_OPCODES:
            continue
        ms = event["dur"] / 1e3 / steps  # microseconds per event
        key = f"{jaxcnn_phase(instruction['op_name'])}/{jaxcnn_kind(instruction)}"
        busy[key] += ms
        # The same operation of every block together: digits out, the jit/loop prefix cut.
        operation = re.sub(r"\d+", "#", instruction["op_name"].split("closed_call/")[-1])
        by_operation[f"{key}: {operation}"] += ms
    top = sorted(by_operation.items(), key=lambda item: -item[1])[:TOP_OPERATIONS]
    return {"busy_ms": dict(busy), "wall_ms": wall * 1e3 / steps, "top_ms": dict(top)}


def profile_torch(spec: dict) -> dict:
    """Child mode: profile the PyTorch twin's step, busy ms per step by (phase, kind)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from benchmarks import torch_models
    from benchmarks.train_step import NUM_CLASSES

    model = torch_models.build(spec["case"], NUM_CLASSES)
    step = torch_models.make_train_step(
        model,
        spec["batch"],
        CASES[spec["case"]][2],
        NUM_CLASSES,
        spec["dtype"],
        phase=lambda name: record_function(f"phase:{name}"),
    )
    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(spec["steps"]):
            step()
        wall = time.perf_counter() - start
    events = list(prof.events())
    phases = [
        (e.time_range.start, e.time_range.end, e.name.removeprefix("phase:"))
        for e in events
        if e.name.startswith("phase:")
    ]
    busy, by_operation = collections.defaultdict(float), collections.defaultdict(float)
    for event in events:
        if not event.name.startswith("aten::") or event.self_cpu_time_total <= 0:
            continue
        start = event.time_range.start
        phase = next((p for s, e, p in phases if s <= start <= e), "update")
        key = f"{phase}/{torch_kind(event.name)}"
        ms = event.self_cpu_time_total / 1e3 / spec["steps"]
        busy[key] += ms
        by_operation[f"{key}: {event.name}"] += ms
    top = sorted(by_operation.items(), key=lambda item: -item[1])[:TOP_OPERATIONS]
    return {"busy_ms": dict(busy), "wall_ms": wall * 1e3 / spec["steps"], "top_ms": dict(top)}


def measure(spec: dict) -> dict:
    return profile_torch(spec) if spec["framework"] == "torch" else profile_jaxcnn(spec)


def table(case: str, jaxcnn: dict, torch: dict | None) -> list[str]:
    """Markdown rows: phase, kind, jaxcnn ms/step, PyTorch ms/step, their ratio; then totals."""
    rows = [
        f"**{case}**",
        "",
        "| phase | kind | jaxcnn ms/step | PyTorch ms/step | jaxcnn / PyTorch time |",
        "|---|---|---:|---:|---:|",
    ]

    def cells(key_of, jax_ms: float, torch_ms: float | None) -> str:
        ratio = f"{jax_ms / torch_ms:.2f}" if torch_ms else "–"
        torch_cell = f"{torch_ms:,.1f}" if torch_ms is not None else "–"
        return f"| {key_of} | {jax_ms:,.1f} | {torch_cell} | {ratio} |"

    for phase in PHASES:
        for kind in KINDS:
            key = f"{phase}/{kind}"
            jax_ms = jaxcnn["busy_ms"].get(key, 0.0)
            torch_ms = torch["busy_ms"].get(key, 0.0) if torch else None
            if jax_ms >= 0.05 or (torch_ms or 0) >= 0.05:
                rows.append(cells(f"{phase} | {kind}", jax_ms, torch_ms))
    total = sum(jaxcnn["busy_ms"].values())
    torch_total = sum(torch["busy_ms"].values()) if torch else None
    rows.append(cells("all | busy time", total, torch_total))
    rows.append(cells("all | wall time", jaxcnn["wall_ms"], torch["wall_ms"] if torch else None))
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step_profile", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--models", default="vit_s16,airbench94", help=f"of {', '.join(CASES)}")
    parser.add_argument("--steps", type=int, default=8, help="profiled train steps (at least)")
    parser.add_argument("--batch", type=int, default=0, help="0 = each case's default")
    parser.add_argument("--dtype", default="float32", help=f"of {', '.join(DTYPES)}")
    parser.add_argument("--skip_torch", action="store_true", help="profile jaxcnn only")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch <= 8, 1 step")
    parser.add_argument("--output", default="", help="'' = benchmarks/results/step_profile_…")
    rounds.add_child_arguments(parser)
    return parser


def _check(args: argparse.Namespace) -> list[str]:
    """The cases to profile; raises UserError."""
    cases = args.models.split(",")
    if unknown := [case for case in cases if case not in CASES]:
        raise unknown_choice("case", unknown[0], CASES)
    if args.dtype not in DTYPES:
        raise unknown_choice("--dtype", args.dtype, DTYPES)
    if args.steps < 1:
        raise UserError(f"--steps must be 1 or more, not {args.steps}")
    return cases


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.child:
        return rounds.child_main(args, measure)
    try:
        cases = _check(args)
    except UserError as error:
        parser.exit(2, f"error: {error}\n")
    host = hardware.describe_host()
    with_torch = not args.skip_torch and host["torch"] is not None
    print(f"# {host['cpu']}, {host['cores']} cores; jax {host['jax']}, torch {host['torch']}")
    print(f"# dtype {args.dtype}; busy time per train step by kind of operation")
    flags = f"{os.environ.get('XLA_FLAGS', '')} {TRACEME_FLAG}".strip()
    report = {"host": host, "dtype": args.dtype, "results": []}
    output = Path(args.output or RESULTS / f"step_profile_cpu_{args.dtype}.json")
    for case in cases:
        batch = args.batch or CASES[case][3]
        if args.quick:
            batch = min(batch, 8)
        spec = {"case": case, "batch": batch, "dtype": args.dtype, "steps": args.steps}
        if args.quick:
            spec["steps"] = 1
        try:
            jaxcnn = rounds.run_child(
                "benchmarks.step_profile", {**spec, "framework": "jaxcnn"}, env={"XLA_FLAGS": flags}
            )
            torch = None
            if with_torch:
                torch = rounds.run_child("benchmarks.step_profile", {**spec, "framework": "torch"})
        except rounds.ChildFailed as error:
            raise SystemExit(f"error: a profile failed: {error}") from None
        print("\n".join(table(case, jaxcnn, torch)) + "\n", flush=True)
        report["results"].append({"case": case, "batch": batch, "jaxcnn": jaxcnn, "torch": torch})
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"# written to {output}")


if __name__ == "__main__":
    main()
