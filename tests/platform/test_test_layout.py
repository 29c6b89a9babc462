"""The tests' own layout, as tests/support/__init__.py describes it: helpers live in
tests/support/, test modules import helpers and never one another, and bench/ borrows from the
tests only their support package."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_no_module_imports_a_test_module_or_a_conftest() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for root in ("tests", "bench")
        for path in sorted((ROOT / root).rglob("*.py"))
        for module in imported_modules(path)
        if module.startswith("tests.")
        and (module.rsplit(".", 1)[-1].startswith("test_") or module.endswith(".conftest"))
    ]
    assert not offenders, offenders


def test_helpers_live_in_the_support_package() -> None:
    support = ROOT / "tests" / "support"
    strays = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if support not in path.parents
        and not path.name.startswith("test_")
        and path.name not in ("conftest.py", "__init__.py")
    ]
    assert not strays, f"move these to tests/support/: {strays}"


def test_bench_borrows_only_the_support_package() -> None:
    borrowed = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / "bench").rglob("*.py"))
        for module in imported_modules(path)
        if module.startswith("tests") and not module.startswith("tests.support")
    ]
    assert not borrowed, borrowed
