"""The training core: state, optimizer, compiled steps, parallelism, checkpoints, logs, loop."""
