"""Using a trained run: ``jaxcnn.evaluate``, ``jaxcnn.predict`` and fine-tuning (``init_from``,
``init_fresh``, ``trainable``), all on one short quickstart run."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization, traverse_util
from PIL import Image
from sklearn.datasets import load_digits
from test_train import quickstart_config

from jaxcnn.data import DatasetInfo
from jaxcnn.training import init_from
from jaxcnn.training.checkpoint import Checkpointer, read_saved_state
from jaxcnn.training.loop import restore_or_initialise, train_and_evaluate
from jaxcnn.training.setup import build_setup

from conftest import run_cli, shared_workdir

STEPS = 150  # checkpoints at 100 and 150


@pytest.fixture(scope="module")
def trained_run(digits_data_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One quickstart run with a moving average, shared by this module's tests and by
    pytest-xdist's workers."""
    config = quickstart_config(
        digits_data_dir,
        num_train_steps=STEPS,
        checkpoint_every_steps=100,
        **{"ema.decay": 0.9},
    )
    return shared_workdir(
        tmp_path_factory, "trained_quickstart", lambda w: train_and_evaluate(config, str(w))
    )


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The digits builder's split from scikit-learn directly: images 0..255, labels."""
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    is_test = np.arange(len(images)) % 5 == 0
    keep = is_test if split == "test" else ~is_test
    return images[keep], digits.target[keep]


def _files(workdir: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file outside ``evaluation/``."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in workdir.rglob("*")
        if p.is_file() and "evaluation" not in p.relative_to(workdir).parts
    }


def test_evaluate_reproduces_results_json_with_a_confusion_matrix(trained_run):
    before = _files(trained_run)
    result = run_cli("jaxcnn.evaluate", f"--workdir={trained_run}")
    assert result.returncode == 0, result.stderr

    out = trained_run / "evaluation" / f"step_{STEPS}"
    record = json.loads((out / "evaluation.json").read_text())
    results = json.loads((trained_run / "results.json").read_text())
    assert record["weights"] == "ema" == results["eval_weights"]
    assert record["accuracy"] == results["eval"]["accuracy"]
    assert record["raw"]["accuracy"] == results["eval_raw"]["accuracy"]
    assert record["loss"] == pytest.approx(results["eval"]["loss"], rel=1e-5)
    matrix = np.array(json.loads((out / "confusion_matrix.json").read_text())["matrix"])
    _, labels = _digits("test")
    np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(labels, minlength=10))
    assert np.trace(matrix) / matrix.sum() == pytest.approx(record["accuracy"])
    assert [c["num_examples"] for c in record["per_class"]] == matrix.sum(axis=1).tolist()
    assert (out / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG")
    assert f"top-1 accuracy {record['accuracy']:.4f}" in result.stdout
    assert _files(trained_run) == before  # nothing the run wrote was touched


def test_evaluate_another_split_by_override_and_refuses_a_bad_step(trained_run):
    result = run_cli(
        "jaxcnn.evaluate",
        f"--workdir={trained_run}",
        "--step=100",
        "--config.dataset.eval_split=train",
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(
        (trained_run / "evaluation" / "step_100_train" / "evaluation.json").read_text()
    )
    assert (record["step"], record["split"], record["num_examples"]) == (100, "train", 1437)
    _, labels = _digits("train")
    assert [c["num_examples"] for c in record["per_class"]] == np.bincount(labels).tolist()

    bad = run_cli("jaxcnn.evaluate", f"--workdir={trained_run}", "--step=7")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"error: {trained_run} has no checkpoint at step 7; its steps: 100, {STEPS}"
    ]


def test_predict_images_of_any_size_and_channels(trained_run, tmp_path):
    images, labels = _digits("test")
    folder = tmp_path / "images"
    (folder / "rgb").mkdir(parents=True)
    expected = {}
    for i, (size, mode) in enumerate([(8, "L"), (24, "L"), (40, "RGB"), (17, "RGB")]):
        picture = Image.fromarray(images[i]).resize((size, size), Image.BILINEAR).convert(mode)
        path = folder / ("rgb" if mode == "RGB" else "") / f"{i}.png"
        picture.save(path)
        expected[str(path)] = int(labels[i])
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 10)

    result = run_cli(
        "jaxcnn.predict", f"--workdir={trained_run}", "--json", "--top_k=3", str(folder)
    )
    assert result.returncode == 1  # one image failed; the others were classified
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"error: {corrupt}: ")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(line["image"] for line in lines) == sorted(expected)
    for line in lines:
        probabilities = [entry["probability"] for entry in line["top_k"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
    right = sum(line["top_k"][0]["class"] == expected[line["image"]] for line in lines)
    assert right >= 3, lines


def _flat(tree) -> dict[str, np.ndarray]:
    return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def test_init_from_copies_weights_freezes_and_yields_to_resume(trained_run, tmp_path):
    """From the run's checkpoint at step 100 into a 5-class LeNet-5: every parameter is the
    source's (its moving average) but the resized head; with ``trainable`` only the head
    moves; a checkpoint of the new run's own comes before init_from."""
    config = quickstart_config(
        "", init_from=f"{trained_run}:100", trainable="output", **{"ema.decay": 0.9}
    )
    info = DatasetInfo("generated", 5, (32, 32, 1), 1_000, 0)
    setup = build_setup(config, info=info)
    checkpointer = Checkpointer(str(tmp_path / "finetune"), keep=2)
    state, step = restore_or_initialise(setup, checkpointer)

    assert step == 0
    source = _flat(read_saved_state(str(trained_run), 100)["ema"]["params"])
    fresh = _flat(jax.jit(setup.init_fn())().params)
    params = _flat(state.params)
    for name, value in params.items():
        expected = fresh[name] if name.startswith("output/") else source[name]
        np.testing.assert_array_equal(value, expected, err_msg=name)
    assert params["output/kernel"].shape == (84, 5) != source["output/kernel"].shape
    np.testing.assert_array_equal(_flat(state.ema["params"])["c1/kernel"], source["c1/kernel"])

    # The same weights from a flax-serialized variables file.
    variables = read_saved_state(str(trained_run), 100)["ema"]
    path = tmp_path / "variables.msgpack"
    path.write_bytes(serialization.msgpack_serialize(variables))
    loaded, _ = init_from.load_variables(init_from.locate(str(path)))
    np.testing.assert_array_equal(loaded["params"]["c3"]["kernel"], source["c3/kernel"])

    train_step = jax.jit(setup.train_step())
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.normal(size=(8, 32, 32, 1)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 5, size=(8,)), jnp.int32),
    }
    trained = state
    for _ in range(3):
        trained, _ = train_step(trained, batch)
    after = _flat(trained.params)
    for name, value in after.items():
        if name.startswith("output/"):
            assert not np.array_equal(value, params[name]), name
        else:  # frozen: bit for bit
            np.testing.assert_array_equal(value, params[name], err_msg=name)

    checkpointer.save(3, setup.parallel.for_checkpoint(trained))
    checkpointer.wait()
    resumed, step = restore_or_initialise(setup, checkpointer)
    checkpointer.close()
    assert step == 3
    for name, value in _flat(resumed.params).items():
        np.testing.assert_array_equal(value, after[name], err_msg=name)
