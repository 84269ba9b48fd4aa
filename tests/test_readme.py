"""README.md is the front door: its test command is CI's, and it documents every config field."""

from __future__ import annotations

import ml_collections

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


def test_every_repository_path_named_in_the_docs_exists():
    """README.md, BENCHMARKS.md and the experiment and launcher docstrings name only files and
    folders that exist (``experiments/X.py:ARG`` names the file)."""
    import re

    texts = [REPO / "README.md", REPO / "BENCHMARKS.md", *(REPO / "experiments").glob("*.py")]
    texts += (REPO / "launch").glob("*.py")
    roots = "jaxcnn|experiments|launch|benchmarks|reproductions|constraints"
    pattern = rf"(?<![\w/.])((?:{roots})/[\w./-]*\w)"
    missing = {}
    for text in texts:
        for path in set(re.findall(pattern, text.read_text())):
            if not (REPO / path).exists():
                missing.setdefault(text.name, []).append(path)
    assert not missing, missing
