"""Every promise in the README's "Guarantees" names tests, and every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Guarantees\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_guarantee_names_a_test() -> None:
    promises = [line for line in _section().splitlines() if line.startswith("- ")]
    assert len(promises) >= 20
    for promise in promises:
        assert _REFERENCE.search(promise), f"no test named for: {promise[:80]}"


def test_every_test_a_guarantee_names_exists() -> None:
    missing = [f"{path}::{name}" for path, name in _REFERENCE.findall(_section())
               if not (ROOT / path).is_file() or name not in _tests_in(ROOT / path)]
    assert not missing, missing
