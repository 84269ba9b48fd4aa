"""The base experiment config: every field the trainer reads, with its default and range.

Experiment files in ``experiments/`` start from :func:`base_config` and change what their
reference prescribes, so every experiment accepts the same command-line overrides
(``--config.optimizer.learning_rate=0.05``) and a misspelt field is an error, not a no-op.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import ml_collections

from jaxcnn.errors import UserError


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # initialisation, data order, augmentation and dropout

    config.model = ml_collections.ConfigDict()
    config.model.name = "lenet5"  # see `python -m jaxcnn.models`
    config.model.dtype = "float32"  # computation dtype: float32 | bfloat16 (float16 is refused)
    # Any further field of config.model (e.g. dropout_rate) is passed to the model's constructor.

    config.dataset = ml_collections.ConfigDict()
    # A preset (see jaxcnn/data/presets.py) or any TFDS name; or 'image_folder' (dataset.path
    # holds SPLIT/CLASS/IMAGE files) or 'tfds_dir' (dataset.path is a prepared TFDS directory,
    # e.g. DATA_DIR/NAME/1.0.0).
    config.dataset.name = "digits"
    config.dataset.path = ""  # for image_folder and tfds_dir
    config.dataset.data_dir = ""  # TFDS data dir; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
    config.dataset.manual_dir = ""  # archives downloaded by hand (imagenet2012) to prepare from
    config.dataset.train_split = ""  # '' = the preset's ('train'); slices like 'train[:90%]'
    config.dataset.eval_split = ""  # '' = the preset's ('test')
    # streaming: tf.data decodes and augments on the host. device: the dataset lives in
    # accelerator memory and batches are built there (no TensorFlow needed at train time).
    config.dataset.pipeline = "streaming"
    # device pipeline: folder of .npz caches of decoded splits; '' = $JAXCNN_ARRAY_DIR or
    # ~/.cache/jaxcnn/arrays (written on first use where TensorFlow is installed).
    config.dataset.array_dir = ""
    config.dataset.image_size = 0  # resize to this square size; 0 = the preset's or native
    config.dataset.channels = 0  # 1 (grey) or 3 (RGB) to convert images; 0 = as stored
    config.dataset.mean = ()  # per-channel mean in [0, 1]; () = the preset's
    config.dataset.std = ()  # per-channel std in [0, 1]; () = the preset's
    # default (the preset's) | none | flip | crop | crop_flip (pad, random crop, flip) |
    # inception_crop (random-resized crop + flip; eval resizes and center-crops; streaming only)
    config.dataset.augment = "default"
    config.dataset.crop_padding = 4  # padding of crop and crop_flip, in pixels ...
    config.dataset.crop_fill = "zeros"  # ... filled with zeros | reflect (mirrored edge pixels)
    config.dataset.randaugment_layers = 0  # RandAugment operations per image; 0 = off (streaming)
    config.dataset.randaugment_magnitude = 9.0  # 0-10
    config.dataset.erase_prob = 0.0  # random erasing probability per image
    config.dataset.mixup_alpha = 0.0  # Beta(a, a) mixup within batch pairs; 0 = off
    config.dataset.cutmix_alpha = 0.0  # CutMix likewise (with mixup too: half the pairs each)
    config.dataset.shuffle_buffer = 16_384  # streaming
    config.dataset.cache = True  # streaming: keep encoded examples in memory after epoch 1
    # image_folder: decode every image before training and stop with one line naming those that
    # fail (False: a corrupt image fails only when the pipeline reaches it).
    config.dataset.check_images = True

    config.batch_size = 128  # global: across all devices and processes
    config.eval_batch_size = 256  # global; the last batch is padded and masked
    config.num_epochs = 10.0  # training length, unless num_train_steps > 0
    config.num_train_steps = -1  # > 0: train exactly this many steps

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"  # sgd | adamw | rmsprop | lars | lamb
    config.optimizer.learning_rate = 0.1  # peak, reached after warm-up
    config.optimizer.momentum = 0.9  # sgd, rmsprop (0 = none), lars
    config.optimizer.nesterov = False  # sgd, rmsprop, lars
    config.optimizer.b1 = 0.9  # adamw, lamb
    config.optimizer.b2 = 0.999  # adamw, lamb
    config.optimizer.eps = 1e-8  # adamw, lamb; rmsprop (inside the square root, as TF)
    config.optimizer.rms_decay = 0.9  # rmsprop: decay of the mean square
    config.optimizer.trust_coefficient = 0.001  # lars
    config.optimizer.weight_decay = 0.0  # on the parameters of weight_decay_params
    # kernels (and embeddings; not biases or normalisation parameters) | all
    config.optimizer.weight_decay_params = "kernels"
    # Per-parameter decay factors, "REGEX=FACTOR,..." as lr_multipliers; sgd and rmsprop only
    # (they add the decay to the gradient, so a parameter's lr multiplier scales its decay too).
    config.optimizer.weight_decay_multipliers = ""
    config.optimizer.grad_clip_norm = 0.0  # clip the global gradient norm; 0 = off
    # Per-parameter update factors, "REGEX=FACTOR,..." matched against parameter paths such as
    # "block1/conv/kernel" (first match wins); a factor of 0 freezes the parameter.
    config.optimizer.lr_multipliers = ""
    # "REGEX=EPOCHS,...": the matching parameters stop training after that many epochs.
    config.optimizer.freeze_after_epochs = ""
    # Split each batch into this many micro-batches and average their gradients: the update of
    # the whole batch in less memory (each device's batch must divide).
    config.optimizer.accum_steps = 1

    config.schedule = ml_collections.ConfigDict()
    # cosine | linear | polynomial | exponential | constant | step
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 0.0  # linear warm-up ...
    config.schedule.warmup_init_factor = 0.0  # ... from this fraction of the peak
    config.schedule.end_factor = 0.0  # cosine, linear, polynomial: final learning rate / peak
    config.schedule.power = 2.0  # polynomial: (1 - progress)^power
    config.schedule.decay_factor = 0.97  # exponential: multiply the rate by this ...
    config.schedule.decay_every_epochs = 2.4  # ... every this many epochs (staircase)
    config.schedule.step_epochs = ()  # step: epochs at which the rate is multiplied ...
    config.schedule.step_factor = 0.1  # ... by this factor

    # Fine-tuning: start from another run's weights instead of a random initialisation.
    # '' = off; WORKDIR (its newest checkpoint) or WORKDIR:STEP, taking the weights it reports
    # (its moving average where it kept one); or a file of variables: .msgpack
    # (flax.serialization of {'params', 'batch_stats'}) or .npz (arrays named by their paths,
    # 'params/head/kernel'). Parameters whose shape differs (the classifier head for another
    # number of classes) keep their fresh initialisation. A run with checkpoints of its own
    # resumes from them instead.
    config.init_from = ""
    # Comma-separated regexes of parameter paths that keep their fresh initialisation even
    # where init_from has them in the same shape (e.g. 'head' for a head of other classes).
    config.init_fresh = ""
    # Comma-separated regexes of the parameter paths that train; '' = all. The others are
    # frozen (an optimizer.lr_multipliers factor of 0); BatchNorm statistics still update.
    config.trainable = ""

    config.label_smoothing = 0.0  # mix this much of the uniform distribution into targets
    config.aux_loss_weight = 0.3  # weight of auxiliary classifier losses (GoogLeNet)

    # Exponential moving average of the weights and BatchNorm statistics, evaluated beside the
    # trained weights (results.json reports the EMA's). Each update: ema += (1 - d) (w - ema).
    config.ema = ml_collections.ConfigDict()
    config.ema.decay = 0.0  # d; 0 = off
    # none | count: d_n = min(d, (1 + n) / (10 + n)) at step n (TF's and timm's warm-up) |
    # cubic: d_n = d (n / total_steps)^3 (airbench's Lookahead)
    config.ema.warmup = "none"
    config.ema.every_steps = 1  # update the average every N steps
    config.ema.lookahead = False  # after each update, reset the trained weights to the average

    # Test-time augmentation at evaluation, averaging logits: none | flip (mirror) |
    # flip+translate (mirror, and both shifted by one pixel up-left and down-right)
    config.eval_tta = "none"

    config.parallelism = "jit"  # jit (one program over a device mesh) | pmap
    config.shard_params = False  # jit: split params and optimizer state over devices (FSDP)
    # Convolutions: onednn (oneDNN's kernels through an XLA custom call, CPU only) | taps
    # (kernel gradients as one matmul per kernel tap, depthwise convolutions as sums over taps)
    # | xla (XLA's own) | auto (onednn on CPU where it builds, on any number of devices; taps
    # on CPU where it does not, xla on GPU/TPU). See jaxcnn/models/conv.py.
    config.conv_impl = "auto"
    # Train steps per compiled call (a lax.scan over that many batches); 0 = auto: 8 on CPU,
    # where it saves XLA re-allocating the step's buffers each call, 1 on GPU/TPU.
    config.steps_per_dispatch = 0
    # Training metrics (console, metrics.jsonl, TensorBoard) every N steps or T seconds.
    config.log_every_secs = 5.0
    config.log_every_steps = 50
    config.eval_every_steps = 0  # evaluate every N steps; 0 = at the end only
    config.eval_every_epochs = 0.0  # > 0: every this many epochs instead
    config.checkpoint_every_steps = 500  # and always at the end (and when stopped by a signal)
    config.checkpoint_every_epochs = 0.0  # > 0: every this many epochs instead
    # Write a jax.profiler trace of these steps to WORKDIR/profile, e.g. "100:110"; "" = off.
    config.profile_steps = ""
    config.keep_checkpoints = 3  # the last N checkpoints are kept
    return config


def _at_least(low: float, *, above: bool = False, high: float | None = None) -> Callable:
    def check(value: Any) -> str | None:
        ok = (value > low if above else value >= low) and (high is None or value < high)
        if ok and math.isfinite(value):
            return None
        bound = f"> {low}" if above else f">= {low}"
        return bound + (f" and < {high}" if high is not None else "")

    return check


# Numeric fields and their valid ranges; names, choices and relations are checked where they
# are used (the optimizer, schedule, model and data builders), also before any work starts.
_RANGES: dict[str, Callable[[Any], str | None]] = {
    "batch_size": _at_least(1),
    "eval_batch_size": _at_least(1),
    "num_epochs": _at_least(0, above=True),
    "optimizer.learning_rate": _at_least(0),
    "optimizer.momentum": _at_least(0, high=1),
    "optimizer.weight_decay": _at_least(0),
    "optimizer.grad_clip_norm": _at_least(0),
    "optimizer.eps": _at_least(0),
    "optimizer.accum_steps": _at_least(1),
    "schedule.warmup_epochs": _at_least(0),
    "schedule.warmup_init_factor": _at_least(0),
    "schedule.end_factor": _at_least(0),
    "label_smoothing": _at_least(0, high=1),
    "aux_loss_weight": _at_least(0),
    "ema.decay": _at_least(0, high=1),
    "ema.every_steps": _at_least(1),
    "dataset.image_size": _at_least(0),
    "dataset.crop_padding": _at_least(0),
    "dataset.shuffle_buffer": _at_least(1),
    "steps_per_dispatch": _at_least(0),
    "log_every_secs": _at_least(0),
    "log_every_steps": _at_least(0),
    "eval_every_steps": _at_least(0),
    "eval_every_epochs": _at_least(0),
    "checkpoint_every_steps": _at_least(0),
    "checkpoint_every_epochs": _at_least(0),
    "keep_checkpoints": _at_least(1),
}


def path_patterns(field: str, text: str) -> list[re.Pattern]:
    """The regexes of a comma-separated field of parameter-path patterns (``trainable``,
    ``init_fresh``); a pattern that does not compile is a :class:`UserError`."""
    patterns = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            patterns.append(re.compile(item))
        except re.error as error:
            raise UserError(
                f"{field}: {item!r} is not a regular expression ({error}); give comma-separated "
                "regexes of parameter paths such as 'head' or 'stage3/.*/conv'"
            ) from None
    return patterns


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raise a one-line :class:`UserError` for the first field out of its valid range, before
    anything is built or trained (``num_epochs`` only matters without ``num_train_steps``)."""
    for name, check in _RANGES.items():
        if name == "num_epochs" and config.num_train_steps > 0:
            continue
        node = config
        for part in name.split("."):
            node = node[part]
        problem = check(node) if isinstance(node, int | float) else "a number"
        if problem:
            raise UserError(f"{name}={node} is out of range; valid: {problem}")
    for field in ("trainable", "init_fresh"):
        path_patterns(field, config[field])
    if config.model.dtype == "float16":
        raise UserError(
            "model.dtype=float16 needs loss scaling, which jaxcnn does not do; use bfloat16 "
            "(float32's range at float16's speed) or float32"
        )
