"""README.md is the front door: its test command is CI's, and it documents every config field."""

from __future__ import annotations

import concurrent.futures
import re
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest

from jaxcnn.config import base_config

from conftest import REPO


def _leaves(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    names = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            names += _leaves(value, f"{prefix}{key}.")
        else:
            names.append(f"{prefix}{key}")
    return names


def test_readme_documents_every_config_field():
    readme = (REPO / "README.md").read_text()
    missing = [name for name in _leaves(base_config()) if f"| `{name}` |" not in readme]
    assert not missing, f"README.md's config table lacks: {missing}"


def test_ci_runs_the_readme_setup_and_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]" && python -m pytest' in readme
    assert 'pip install --quiet -e ".[dev]"' in ci and "python -m pytest" in ci


def test_readme_model_table_lists_every_model():
    from jaxcnn import models

    readme = (REPO / "README.md").read_text()
    missing = [name for name in models.list_models() if f"| {name} |" not in readme]
    assert not missing, f"README.md's model table lacks: {missing}"


def _docs() -> list[Path]:
    """The texts that tell users what to run: READMEs, BENCHMARKS.md, experiment and launcher
    docstrings."""
    texts = [REPO / "README.md", REPO / "BENCHMARKS.md", REPO / "launch" / "README.md"]
    texts += [REPO / "reproductions" / "README.md"]
    return texts + sorted((REPO / "experiments").glob("*.py")) + sorted(REPO.glob("launch/*.py"))


def test_every_repository_path_named_in_the_docs_exists():
    """The docs name only files and folders that exist (``experiments/X.py:ARG`` names the
    file)."""
    roots = "jaxcnn|experiments|launch|benchmarks|reproductions|constraints"
    pattern = rf"(?<![\w/.])((?:{roots})/[\w./-]*\w)"
    missing = {}
    for text in _docs():
        for path in set(re.findall(pattern, text.read_text())):
            if not (REPO / path).exists():
                missing.setdefault(text.name, []).append(path)
    assert not missing, missing


# `python -m jaxcnn.X` / `python -m benchmarks.X` and `python launch/X.py`, as users type them.
_COMMAND = re.compile(r"\bpython3? (-m (?:jaxcnn|benchmarks)(?:\.\w+)+|launch/\w+\.py)")


def _commands(text: str) -> set[str]:
    return {f"python {match}" for match in _COMMAND.findall(text)}


def _source(command: str) -> Path:
    """The file that ``command`` runs: a script, a module, or a package's ``__main__.py``."""
    target = command.split()[-1]
    if target.endswith(".py"):
        return REPO / target
    module = REPO / target.replace(".", "/")
    return module / "__main__.py" if module.is_dir() else module.with_suffix(".py")


def _help(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *command.split()[1:], "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.timeout(300)
def test_every_command_named_in_the_docs_and_help_texts_answers_help():
    """Every ``python -m …`` and ``python launch/….py`` command that the docs or a command's own
    ``--help`` name exists, and its ``--help`` exits 0 with a text naming the command as the
    user types it. The commands run at the same time (each imports JAX for seconds)."""
    named: dict[str, list[str]] = {}
    for text in _docs():
        for command in _commands(text.read_text()):
            named.setdefault(command, []).append(text.name)
    assert "python -m jaxcnn.sweep" in named and "python launch/slurm.py" in named
    missing = {c: where for c, where in named.items() if not _source(c).is_file()}
    assert not missing, f"commands whose file does not exist (named in): {missing}"

    answers: dict[str, subprocess.CompletedProcess] = {}
    pending = set(named)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(named)) as pool:
        while pending:  # then the commands that only a help text names
            batch = sorted(pending)
            answers.update(zip(batch, pool.map(_help, batch), strict=True))
            in_help = set().union(*(_commands(a.stdout) for a in answers.values()))
            missing = {c for c in in_help if not _source(c).is_file()}
            assert not missing, f"help texts name commands that do not exist: {missing}"
            pending = in_help - answers.keys()

    bad = {}
    for command, answer in sorted(answers.items()):
        if answer.returncode != 0:
            bad[command] = f"exit {answer.returncode}: {(answer.stderr or answer.stdout)[-300:]}"
        elif command not in answer.stdout:
            bad[command] = "its --help does not name it"
    assert not bad, bad
