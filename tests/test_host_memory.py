"""jaxcnn's malloc settings: XLA:CPU's temporary buffers are reused, not page-faulted in anew."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from jaxcnn import host_memory

from conftest import run_cli

# A jitted function with a ~100 MiB temporary buffer (the cumulative sum, read twice), run as a
# training loop runs steps: one after another, with a little host work in between. Prints the
# page faults of its last three calls.
_PROGRAM = """
import json, resource, time
import jaxcnn
import jax, jax.numpy as jnp

def reversed_product(x):
    y = jnp.cumsum(x, axis=0)
    return (y * y[::-1]).sum()

f = jax.jit(reversed_product)
x = jnp.ones((2048, 4096), jnp.float32)
assert f.lower(x).compile().memory_analysis().temp_size_in_bytes > 64 * 2**20
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    time.sleep(0.05)
print(json.dumps(faults[-3:]))
"""


def _late_page_faults(malloc: str) -> list[int]:
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM],
        env={**os.environ, host_memory.ENV_VAR: malloc},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")
def test_temporary_buffers_are_reused_between_calls():
    pages = 100 * 2**20 // 4096
    # glibc's default: each call maps its temporary buffer anew and faults every page in.
    assert min(_late_page_faults("system")) > pages // 2
    # jaxcnn's default: the buffer stays in the heap for the next call.
    assert max(_late_page_faults("reuse")) < pages // 20


def test_bad_malloc_setting_is_one_line_and_exit_2(tmp_path):
    result = run_cli(
        "jaxcnn.train",
        "--config=experiments/quickstart.py",
        f"--workdir={tmp_path}",
        env={host_memory.ENV_VAR: "jemalloc"},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "error: unknown JAXCNN_MALLOC 'jemalloc'; valid choices: reuse, system"
    )
    assert not any(tmp_path.iterdir())
