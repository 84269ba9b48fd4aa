"""The benchmark tools still run (tiny smoke runs; speed itself is in BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
import json
import statistics
import struct
import sys

import pytest

from jaxcnn.models import conv
from jaxcnn.training.step import steps_per_dispatch

from conftest import SHARED_DATASETS, run_cli


def _peak_file(path, gflops: float) -> str:
    """A peak.json for this host claiming ``gflops`` in float32, as benchmarks.peak writes."""
    from jaxcnn import hardware

    peak = {"float32": {"gflops": gflops, "library": "numpy", "size": 4096}}
    report = {"host": hardware.describe_host(), "quick": False, "results": [], "peak": peak}
    path.write_text(json.dumps(report))
    return str(path)


@pytest.mark.timeout(300)
def test_train_step_benchmark_smoke_run(tmp_path):
    """The default method: jaxcnn and PyTorch each in a fresh process, one round at batch 8."""
    output = tmp_path / "results.json"
    result = run_cli(
        "benchmarks.train_step",
        "--quick",
        "--models=resnet20",
        f"--peak={_peak_file(tmp_path / 'peak.json', 100.0)}",
        f"--output={output}",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text())
    (row,) = report["results"]
    assert row["method"] == "processes" and (row["devices"], row["processes"]) == (1, 1)
    assert row["steps_per_dispatch"] == steps_per_dispatch(0)  # as the training loop runs it
    assert f"| resnet20 | 8 | 269,722 | {row['steps_per_dispatch']} |" in result.stdout
    assert row["parameters"] == 269_722
    assert row["conv_impl"] == conv.resolve_impl("auto")  # auto: oneDNN on CPU, where it builds
    assert row["flops_per_step"] > 1e9  # XLA's convolutions are counted (custom calls are not)
    assert row["peak_rss_mib"] > 0
    jaxcnn = row["runners"]["jaxcnn"]
    (only_round,) = jaxcnn["rounds"]  # every round is kept, with its windows
    assert jaxcnn["median"] == statistics.median(only_round["window_images_per_sec"]) > 0
    assert only_round["machine"]["platform"] == "cpu"
    share = row["flops_per_step"] * jaxcnn["median"] / 8 / 100e9  # of the peak file's figure
    assert jaxcnn["fraction_of_peak"] == pytest.approx(share)
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (pip install -e '.[bench]'): PyTorch side not run")
    twin = row["runners"]["torch"]
    assert twin["median"] > 0 and twin["rounds"][0]["parameters"] == 269_722
    assert row["ratio_jaxcnn_to_torch"] == pytest.approx(jaxcnn["median"] / twin["median"])


def test_rounds_alternate_and_reverse():
    from benchmarks import rounds

    assert rounds.schedule(["jaxcnn", "torch", "v"], 3) == [
        (0, "jaxcnn"), (0, "torch"), (0, "v"),
        (1, "v"), (1, "torch"), (1, "jaxcnn"),
        (2, "jaxcnn"), (2, "torch"), (2, "v"),
    ]  # fmt: skip
    assert rounds.spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}


def test_interleaved_method_times_variants_alongside(monkeypatch):
    from benchmarks import train_step

    monkeypatch.setitem(train_step.CASES, "tiny", ("lenet5", {}, (32, 32, 1), 8))
    specs = train_step.runner_specs(
        "tiny", 8, "float32", "auto", 2, ("xla",), (1,), ("bfloat16",), with_torch=False
    )
    results = train_step.interleaved(specs, windows=2, steps=3)
    row = train_step.summarise("tiny", "interleaved", "float32", 8, results, peak_flops=None)
    assert row["conv_impl"] == conv.resolve_impl("auto")  # the default ...
    assert row["steps_per_dispatch"] == 2
    # ... and the same step with each other implementation, one step per dispatch, bfloat16.
    labels = {"jaxcnn", "conv_impl=xla", "steps_per_dispatch=1"}
    labels.add("dtype=bfloat16")
    assert set(row["runners"]) == labels
    for runner in row["runners"].values():
        (windows,) = [r["window_images_per_sec"] for r in runner["rounds"]]
        assert len(windows) == 2 and runner["median"] == statistics.median(windows) > 0
        assert "fraction_of_peak" not in runner  # no peak given
    assert row["ratio_jaxcnn_to_torch"] is None


def test_negative_steps_per_dispatch_is_one_line():
    result = run_cli("benchmarks.train_step", "--steps_per_dispatch=-1")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: steps_per_dispatch must be 0 (auto) or more, not -1"


def test_unavailable_conv_impl_is_one_line():
    result = run_cli("benchmarks.train_step", "--compare_conv_impls=taps,fast")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: unknown conv_impl 'fast'; valid choices: auto, onednn, taps, xla"
    )
    result = run_cli("benchmarks.train_step", "--compare_dtypes=bfloat16,float16")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: unknown --compare_dtypes 'float16'; valid choices: bfloat16, float32"
    )


def test_unknown_case_is_one_line():
    result = run_cli("benchmarks.train_step", "--models=resnet9000")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown case 'resnet9000'")


def test_host_devices_need_the_processes_method():
    result = run_cli("benchmarks.train_step", "--method=interleaved", "--devices=8")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --devices and --processes need --method processes"


def test_peak_smoke_run_and_reuse(tmp_path, monkeypatch):
    """numpy's float32 peak in a child process (numpy has no bfloat16 matmul); XLA's and
    PyTorch's in this one; a peak file of this host is reused, one of another is not."""
    from benchmarks import peak

    output = tmp_path / "peak.json"
    result = run_cli("benchmarks.peak", "--quick", "--libraries=numpy", f"--output={output}")
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text())
    assert report["peak"]["float32"]["library"] == "numpy"
    assert report["peak"]["float32"]["gflops"] > 0 and "bfloat16" not in report["peak"]
    assert [r.get("skipped") for r in report["results"]] == [None, "numpy has no bfloat16 matmul"]
    for library in ("xla", "torch"):
        if library == "torch" and importlib.util.find_spec("torch") is None:
            continue
        spec = {"library": library, "dtype": "bfloat16", "sizes": [32, 64], "repeats": 1}
        assert set(peak.measure(spec)["gflops_by_size"]) == {"32", "64"}
    assert peak.host_peak(output, quick=True) == (report["peak"], str(output))
    monkeypatch.setattr(peak, "measure_all", lambda *args: {**report, "peak": {"new": 1}})
    assert peak.host_peak(output, quick=False)[0] == {"new": 1}  # the file was a quick one
    assert json.loads(output.read_text())["peak"] == {"new": 1}  # and is replaced


@pytest.mark.timeout(300)
def test_accelerator_check_tiny_run(tmp_path):
    """benchmarks.accelerator at toy sizes on the CPU: the step, its MFU against a measured
    matmul, the fast CIFAR recipe from an array cache, without TensorFlow and without host
    syncs inside the loop's dispatches."""
    output = tmp_path / "accelerator.json"
    result = run_cli(
        "benchmarks.accelerator", "--tiny", f"--array_dir={tmp_path}", f"--output={output}"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text())
    assert report["step"]["images_per_sec"] > 0 and report["step"]["mfu"] > 0
    assert "measured" in report["peak_source"]  # a CPU is not in jaxcnn/hardware.py
    assert report["bare_step"]["compile_secs"] > 0
    recipe = report["recipe"]
    assert recipe["steps"] == 4 and 0 <= recipe["accuracy"] <= 1
    assert recipe["compile_secs"]["/jax/core/compile/backend_compile_duration"] > 0
    assert recipe["host_syncs_in_dispatches"] == 0  # the loop waits only when it logs ...
    assert recipe["host_syncs_elsewhere"] > 0  # ... (and the counting sees those waits)
    assert not report["tensorflow_imported"]
    assert "| fast CIFAR: host syncs inside dispatches (elsewhere) | 0 (" in result.stdout


def test_host_sync_counting_sees_reads_and_waits_inside_a_method():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.host_syncs import count_host_syncs

    class Loop:
        def dispatch(self, x, sync):
            y = x * 2
            if sync:
                float(y[0]), np.asarray(y), jax.block_until_ready(y), y.tolist()
            return y

    x, method, asarray = jnp.ones(3), Loop.dispatch, np.asarray
    with count_host_syncs(Loop, "dispatch") as syncs:
        Loop().dispatch(x, sync=False)
        np.asarray(Loop().dispatch(x, sync=True)), np.asarray([1.0])
    assert (syncs.inside, syncs.elsewhere) == (4, 1)
    assert Loop.dispatch is method and np.asarray is asarray  # put back


def test_xla_cpu_temp_buffer_reproduction_runs(monkeypatch, capsys):
    from benchmarks import xla_cpu_temp_buffers

    argv = ["xla_cpu_temp_buffers", "--mib=1", "--iterations=2", "--repeats=1"]
    monkeypatch.setattr(sys, "argv", argv)
    xla_cpu_temp_buffers.main()
    out = capsys.readouterr().out
    assert "temporary buffer of one call: 1.0 MiB" in out
    assert out.count("minor page faults/iteration") == 2
    assert "× the time of all in one call" in out


def test_tfrecord_reader_decodes_as_tensorflow_does(tmp_path):
    """The first examples of the prepared CIFAR-10 test split, read without TensorFlow, equal
    TensorFlow's reading (with the accurate DCT); a cache written from them loads."""
    import numpy as np
    import tensorflow as tf

    from benchmarks import tfrecord_arrays

    source = SHARED_DATASETS / "cifar10_jpeg" / "1.0.0"
    if not source.exists():
        pytest.skip(f"no prepared cifar10_jpeg in {SHARED_DATASETS}")
    (test_file,) = tfrecord_arrays.split_files(source, "cifar10_jpeg", "test")
    images, labels = tfrecord_arrays.read_split([test_file], limit=20)
    features = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }
    for i, record in enumerate(tf.data.TFRecordDataset(str(test_file)).take(20)):
        example = tf.io.parse_single_example(record, features)
        image = tf.io.decode_jpeg(example["image"], channels=3, dct_method="INTEGER_ACCURATE")
        np.testing.assert_array_equal(images[i], image.numpy())
        assert labels[i] == example["label"].numpy()
    # A small copy of the dataset folder: 20 records per split, framed as TFRecords.
    payloads = [r for _, r in zip(range(20), tfrecord_arrays.records(test_file), strict=False)]
    framed = b"".join(struct.pack("<Q", len(p)) + bytes(4) + p + bytes(4) for p in payloads)
    for split in ("train", "test"):
        (tmp_path / f"cifar10_jpeg-{split}.tfrecord-00000-of-00001").write_bytes(framed)
    (tmp_path / "label.labels.txt").write_bytes((source / "label.labels.txt").read_bytes())
    cache = str(tmp_path / "arrays" / "cache.npz")
    tfrecord_arrays.write_cache(tmp_path, "cifar10_jpeg", ("train", "test"), cache)
    arrays = np.load(cache)
    np.testing.assert_array_equal(arrays["eval_image"], images)
    assert arrays["num_classes"] == 10 and arrays["class_names"][0] == "airplane"


@pytest.mark.timeout(180)
def test_conv_layers_benchmark_smoke_run(tmp_path):
    output = tmp_path / "layers.json"
    result = run_cli("benchmarks.conv_layers", "--quick", "--skip_torch", f"--output={output}")
    assert result.returncode == 0, result.stderr
    rows = json.loads(output.read_text())["results"]
    assert len(rows) == 3  # the script also checks that the filter gradients agree
    for row in rows:
        assert row["xla_filter_grad_ms"] > 0 and row["gemm_filter_grad_ms"] > 0
        if conv.resolve_impl("auto") == "onednn":
            assert row["onednn_forward_backward_ms"] > 0
    assert result.stdout.count("| 8, ") == 3


@pytest.mark.timeout(300)
def test_step_profile_smoke_run(tmp_path):
    """Both frameworks' steps profiled in their own processes, sorted into the same kinds."""
    output = tmp_path / "profile.json"
    result = run_cli(
        "benchmarks.step_profile", "--quick", "--models=resnet20", f"--output={output}"
    )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(output.read_text())["results"]
    jaxcnn = row["jaxcnn"]["busy_ms"]
    # XLA:CPU's per-operation events were on, and each was tied to its Flax module and phase.
    for key in ("forward/convolution", "backward/convolution", "forward/normalization"):
        assert jaxcnn.get(key, 0) > 0, key
    assert 0.3 < sum(jaxcnn.values()) / row["jaxcnn"]["wall_ms"] < 3
    assert "| forward | convolution |" in result.stdout
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (pip install -e '.[bench]'): PyTorch side not run")
    torch = row["torch"]["busy_ms"]
    for key in ("forward/convolution", "backward/convolution", "backward/normalization"):
        assert torch.get(key, 0) > 0, key
    assert torch.get("update/elementwise and other", 0) > 0  # SGD's update, in its own phase


def test_step_profile_sorts_operations_into_kinds_and_phases():
    import jax
    import jax.numpy as jnp

    from benchmarks import step_profile

    def loss(kernel, x):
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME")
        return jnp.tanh(y.reshape(2, -1) @ jnp.ones((y.size // 2, 3))).sum()

    x, kernel = jnp.ones((2, 3, 8, 8)), jnp.ones((4, 3, 3, 3))
    text = jax.jit(jax.grad(loss)).lower(kernel, x).compile().as_text()
    instructions = step_profile.hlo_instructions(text)
    kinds = {step_profile.jaxcnn_kind(i) for i in instructions.values()}
    assert {"convolution", "matmul"} <= kinds
    assert all(i["opcode"] in i["opcodes"] for i in instructions.values())
    phase = step_profile.jaxcnn_phase
    assert phase("jit(step)/transpose(jvp(ResNet))/stage1_block0/conv1/x") == "backward"
    assert phase("jit(step)/jvp(ResNet)/stage1_block0/bn1/mul") == "forward"
    assert (phase("jit(step)/sgd/add"), phase("")) == ("update", "unattributed")
    module_op = {"opcode": "multiply", "opcodes": {"multiply"}, "target": None}
    bn = {**module_op, "op_name": "jit(step)/jvp(ResNet)/stage1_block0/bn2/mul"}
    depthwise = {**module_op, "op_name": "jit(step)/jvp(EfficientNet)/stage2_block1/depthwise/mul"}
    assert (step_profile.jaxcnn_kind(bn), step_profile.jaxcnn_kind(depthwise)) == (
        "normalization",
        "convolution",
    )
    torch_ops = ["aten::mkldnn_convolution", "aten::addmm", "aten::native_batch_norm_backward"]
    torch_ops += ["aten::max_pool2d_with_indices", "aten::copy_", "aten::add_"]
    assert [step_profile.torch_kind(op) for op in torch_ops] == list(step_profile.KINDS)


def test_step_profile_unknown_case_is_one_line():
    result = run_cli("benchmarks.step_profile", "--models=resnet9000")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown case 'resnet9000'; valid choices:")
