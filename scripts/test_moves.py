"""Moves the tests' helpers into tests/support/ and rewrites imports to the new places.

    python scripts/test_moves.py apply              # once, on the branch that makes the move
    python scripts/test_moves.py rewrite FILE...    # any branch's files written against the old
                                                    # places (idempotent: run it at every merge)

`apply` does the `git mv`s (MOVES), joins modules into one (MERGES), cuts named definitions out
of test modules into support modules (EXTRACTS), then rewrites every .py file under tests/ and
bench/. `rewrite` only rewrites the files given: `from OLD import name` becomes `from NEW import
name` per the tables below, `from tests.x import old_module` becomes `from tests.support import
new_module as old_module`, dotted names and paths in strings and comments follow; then ruff sorts
the imports and drops the ones left unused. Names that moved between modules are in NAMES; a file
that reached them as attributes of a module (`fleet.eventually`) needs a hand edit.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Old module -> new module: every name of the old module is found in the new one.
MODULES: dict[str, str] = {
    "tests.brokers": "tests.support.brokers",
    "tests.fakes": "tests.support.fakes",
    "tests.fakes.dialects": "tests.support.fakes.dialects",
    "tests.fakes.provider_server": "tests.support.fakes.provider_server",
    "tests.platform.processes": "tests.support.processes",
    "tests.platform.assertions": "tests.support.assertions",
    "tests.platform.probes": "tests.support.probes",
    "tests.platform.seeds": "tests.support.builders",
    "tests.collection.builders": "tests.support.builders",
    "tests.tenancy.builders": "tests.support.builders",
    "tests.tenancy.membership_support": "tests.support.builders",
    "tests.tenancy.hostile_images": "tests.support.hostile_images",
    "tests.collection.pipeline_fixtures": "tests.support.pipeline",
    "tests.faults.fleet": "tests.support.fleet",
    "tests.collection.oracle": "tests.support.report_oracle",
    "tests.security.calls": "tests.support.security.calls",
    "tests.security.hostile": "tests.support.security.hostile",
    "tests.security.servers": "tests.support.security.servers",
    "tests.security.snapshots": "tests.support.security.snapshots",
    "tests.security.tenants": "tests.support.security.tenants",
    "tests.security.world": "tests.support.security.world",
}

# (old module, name) -> (new module, new name): names that left their module, and names whose
# duplicate was dropped for the one kept (`eventually`: one poller, `check, what, within`).
NAMES: dict[tuple[str, str], tuple[str, str]] = {
    ("tests.collection.test_e2e_collection", "Beacon"): ("tests.support.processes", "Beacon"),
    ("tests.collection.test_e2e_collection", "beacon_env"): (
        "tests.support.processes",
        "beacon_env",
    ),
    ("tests.collection.test_e2e_collection", "delete_namespace"): (
        "tests.support.processes",
        "delete_namespace",
    ),
    ("tests.collection.test_e2e_collection", "eventually"): (
        "tests.support.processes",
        "eventually",
    ),
    ("tests.collection.test_e2e_collection", "pipeline_settings"): (
        "tests.support.pipeline",
        "pipeline_settings",
    ),
    ("tests.collection.test_e2e_collection", "wait_for_end"): (
        "tests.support.pipeline",
        "wait_for_end",
    ),
    ("tests.faults.fleet", "eventually"): ("tests.support.processes", "eventually"),
    ("tests.platform.test_cli", "run_beacon"): ("tests.support.processes", "run_beacon"),
    ("tests.workers.test_analysis", "BRAND"): ("tests.support.builders", "BRAND"),
    ("tests.workers.test_analysis", "COMPETITORS"): ("tests.support.builders", "COMPETITORS"),
    **{
        ("tests.security.test_access_matrix", name): ("tests.support.security.access_matrix", name)
        for name in (
            "Code",
            "OK",
            "UNAUTHENTICATED",
            "PERMISSION_DENIED",
            "NOT_FOUND",
            "VISIBILITY",
            "KEY_SCOPES",
            "expected_refusal",
            "fresh_email",
            "Entry",
            "ORG",
            "WS",
            "MEMBERS",
            "SCHEDULES",
            "PROMPTS",
            "RUNS",
            "TABLE",
            "CELLS",
            "cell_id",
        )
    },
    **{
        ("tests.conftest", name): ("tests.support.app", name)
        for name in (
            "TEST_SECRET",
            "TEST_SIGNING_SECRET",
            "_admin_execute",
            "temporary_database",
            "make_settings",
            "delete_redis_keys",
            "all_stubs",
            "TestUser",
            "NewUser",
        )
    },
}

# Code that left src/ for the tests' report oracle (tests/support/report_oracle.py). Imports of
# these names are rewritten; calls through the module (`rollups.answer_of(...)`,
# `reports.scanned_report(...)`) need `oracle.` by hand.
NAMES.update(
    {
        ("service.domain.collection.rollups", name): ("tests.support.report_oracle", name)
        for name in ("answer_of", "scan_periods", "rebuild", "ScannedRow")
    }
)
NAMES[("service.domain.collection.reports", "scanned_report")] = (
    "tests.support.report_oracle",
    "scanned_report",
)

# git mv old -> new (whole files). tests/support.py becomes the package's __init__.
MOVES: list[tuple[str, str]] = [
    ("tests/support.py", "tests/support/__init__.py"),
    ("tests/brokers.py", "tests/support/brokers.py"),
    ("tests/fakes/__init__.py", "tests/support/fakes/__init__.py"),
    ("tests/fakes/dialects.py", "tests/support/fakes/dialects.py"),
    ("tests/fakes/provider_server.py", "tests/support/fakes/provider_server.py"),
    ("tests/platform/processes.py", "tests/support/processes.py"),
    ("tests/platform/assertions.py", "tests/support/assertions.py"),
    ("tests/platform/probes.py", "tests/support/probes.py"),
    ("tests/collection/builders.py", "tests/support/builders.py"),
    ("tests/tenancy/hostile_images.py", "tests/support/hostile_images.py"),
    ("tests/collection/pipeline_fixtures.py", "tests/support/pipeline.py"),
    ("tests/faults/fleet.py", "tests/support/fleet.py"),
    ("tests/security/calls.py", "tests/support/security/calls.py"),
    ("tests/security/hostile.py", "tests/support/security/hostile.py"),
    ("tests/security/servers.py", "tests/support/security/servers.py"),
    ("tests/security/snapshots.py", "tests/support/security/snapshots.py"),
    ("tests/security/tenants.py", "tests/support/security/tenants.py"),
    ("tests/security/world.py", "tests/support/security/world.py"),
]

# Modules appended to another (their imports joined, their docstrings dropped), then removed.
MERGES: list[tuple[str, str]] = [
    ("tests/tenancy/builders.py", "tests/support/builders.py"),
    ("tests/platform/seeds.py", "tests/support/builders.py"),
    ("tests/tenancy/membership_support.py", "tests/support/builders.py"),
]

NEW_PACKAGES = ["tests/support/security/__init__.py"]


def module_path(module: str) -> str:
    return module.replace(".", "/") + ".py"


def node_range(lines: list[str], node: ast.stmt) -> tuple[int, int]:
    """0-based [start, end) of a top-level statement with its decorators and leading comments."""
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
    while start > 0 and lines[start - 1].lstrip().startswith("#"):
        start -= 1
    assert node.end_lineno is not None
    return start, node.end_lineno


def defined_names(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


def split_module(text: str) -> tuple[list[str], list[str]]:
    """(top-level import statements, the rest without docstring and __future__ import)."""
    tree = ast.parse(text)
    lines = text.splitlines()
    imports: list[str] = []
    body_start = 0
    for i, node in enumerate(tree.body):
        is_doc = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        if is_doc or isinstance(node, ast.Import | ast.ImportFrom):
            assert node.end_lineno is not None
            if not is_doc and not (
                isinstance(node, ast.ImportFrom) and node.module == "__future__"
            ):
                imports.append("\n".join(lines[node.lineno - 1 : node.end_lineno]))
            body_start = node.end_lineno
        else:
            break
    return imports, lines[body_start:]


def add_to_module(path: Path, imports: list[str], body: list[str]) -> None:
    """Appends `body` to the module at `path` (created if new), its imports after the others."""
    if path.exists():
        own_imports, own_body = split_module(path.read_text())
        head = path.read_text().splitlines()
        first = ast.parse(path.read_text()).body[:1]
        is_doc = (
            first and isinstance(first[0], ast.Expr) and isinstance(first[0].value, ast.Constant)
        )
        docstring = head[: first[0].end_lineno] if is_doc else []
    else:
        own_imports, own_body, docstring = [], [], []
    head = [*docstring, "", "from __future__ import annotations", "", *own_imports, *imports]
    text = "\n".join([*head, *own_body, "", "", *body, ""])
    path.write_text(text.lstrip("\n"))


def merge(source: str, target: str) -> None:
    imports, body = split_module((ROOT / source).read_text())
    add_to_module(ROOT / target, imports, body)
    git("rm", "-q", "-f", source)


def extract(source_module: str, names: set[str], target_module: str) -> None:
    """Cuts the top-level definitions of `names` from a module into another module."""
    source = ROOT / module_path(MODULES.get(source_module, source_module))
    text = source.read_text()
    tree = ast.parse(text)
    lines = text.splitlines()
    imports, _ = split_module(text)
    cut: list[tuple[int, int]] = []
    for node in tree.body:
        if defined_names(node) & names:
            cut.append(node_range(lines, node))
    if not cut:
        return
    target = ROOT / module_path(target_module)
    # A name the target already defines was a duplicate: it is dropped, not moved.
    present = set()
    if target.exists():
        present = {n for node in ast.parse(target.read_text()).body for n in defined_names(node)}
    body: list[str] = []
    for node in tree.body:
        if defined_names(node) & names and not defined_names(node) & present:
            start, end = node_range(lines, node)
            body += [*lines[start:end], "", ""]
    keep = [line for i, line in enumerate(lines) if not any(s <= i < e for s, e in cut)]
    moved = sorted(names & {n for node in tree.body for n in defined_names(node)})
    source.write_text("\n".join(keep) + "\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    add_to_module(target, imports, body)
    # The source keeps using what it lost: it imports it back (ruff drops what is unused).
    tree = ast.parse(source.read_text())
    ends = [n.end_lineno or 0 for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    lines = source.read_text().splitlines()
    at = max(ends, default=0)
    lines.insert(at, f"from {target_module} import {', '.join(moved)}")
    source.write_text("\n".join(lines) + "\n")


def git(*args: str) -> None:
    subprocess.run(["git", *args], cwd=ROOT, check=True)


# --- import rewriting ---------------------------------------------------------------------


def destination(module: str, name: str) -> tuple[str, str]:
    if (module, name) in NAMES:
        return NAMES[(module, name)]
    return MODULES.get(module, module), name


def module_of(path: Path) -> str:
    return ".".join(path.resolve().relative_to(ROOT).with_suffix("").parts).removesuffix(
        ".__init__"
    )


def rewrite_import(node: ast.ImportFrom, own: str) -> str | None:
    """The statement that replaces `node`, or None when nothing of it moved."""
    module = node.module or ""
    groups: dict[str, list[str]] = {}
    changed = module == own  # a module importing from itself (after a move) imports nothing
    for alias in node.names:
        full = f"{module}.{alias.name}"
        if full in MODULES:  # from tests.collection import builders
            parent, _, last = MODULES[full].rpartition(".")
            local = alias.asname or alias.name
            groups.setdefault(parent, []).append(last if last == local else f"{last} as {local}")
            changed = True
            continue
        new_module, new_name = destination(module, alias.name)
        local = alias.asname or alias.name
        if (new_module, new_name) != (module, alias.name):
            changed = True
        groups.setdefault(new_module, []).append(
            new_name if new_name == local else f"{new_name} as {local}"
        )
    if not changed:
        return None
    groups.pop(own, None)  # what moved into this very module is defined here
    return "\n".join(f"from {m} import {', '.join(names)}" for m, names in groups.items())


def dotted_pattern() -> list[tuple[re.Pattern[str], str]]:
    """Dotted names and paths of moved modules in strings and comments, longest first."""
    pairs: list[tuple[re.Pattern[str], str]] = []
    for old, new in sorted(MODULES.items(), key=lambda item: -len(item[0])):
        pairs.append((re.compile(rf"(?<![\w.]){re.escape(old)}(?![\w])"), new))
        old_path, new_path = old.replace(".", "/"), new.replace(".", "/")
        pairs.append((re.compile(rf"(?<![\w/]){re.escape(old_path)}\.py"), new_path + ".py"))
    for (old_module, name), (new_module, _) in NAMES.items():
        if name == "TABLE":
            old_path = module_path(old_module)
            pairs.append((re.compile(rf"{re.escape(old_path)} TABLE"), f"{new_module}.TABLE"))
    return pairs


def rewrite_text(text: str, own: str) -> str:
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            ("tests", "service")
        ):
            new = rewrite_import(node, own)
            if new is not None:
                assert node.end_lineno is not None
                indent = lines[node.lineno - 1][: node.col_offset]
                replacement = "".join(f"{indent}{line}\n" for line in new.splitlines())
                if not replacement:  # everything it imported is now defined here
                    replacement = f"{indent}pass\n" if indent else ""
                edits.append((node.lineno - 1, node.end_lineno, replacement))
    for start, end, replacement in sorted(edits, reverse=True):
        lines[start:end] = [replacement]
    out = "".join(lines)
    for pattern, new in dotted_pattern():
        out = pattern.sub(new, out)
    return out


def rewrite(files: list[Path]) -> None:
    changed = []
    for path in files:
        if path.suffix != ".py" or not path.exists():
            continue
        text = path.read_text()
        new = rewrite_text(text, module_of(path))
        if new != text:
            path.write_text(new)
            changed.append(str(path))
    if changed:
        ruff = str(Path(sys.executable).parent / "ruff")
        subprocess.run([ruff, "check", "-q", "--fix", "--select", "I,F401", *changed], cwd=ROOT)
        subprocess.run([ruff, "format", "-q", *changed], cwd=ROOT, check=True)
    print(f"rewrote {len(changed)} file(s)")


def apply() -> None:
    for old, new in MOVES:
        if (ROOT / old).exists():
            (ROOT / new).parent.mkdir(parents=True, exist_ok=True)
            git("mv", old, new)
    for path in NEW_PACKAGES:
        if not (ROOT / path).exists():
            (ROOT / path).write_text('"""Helpers of the security suites (no tests here)."""\n')
    for source, target in MERGES:
        if (ROOT / source).exists():
            merge(source, target)
    by_move: dict[tuple[str, str], set[str]] = {}
    for (old_module, name), (new_module, _) in NAMES.items():
        if (old_module, name) == (new_module, name):
            continue
        by_move.setdefault((old_module, new_module), set()).add(name)
    for (old_module, new_module), names in by_move.items():
        if (ROOT / module_path(MODULES.get(old_module, old_module))).exists():
            extract(old_module, names, new_module)
    files = [p for d in ("tests", "bench") for p in (ROOT / d).rglob("*.py")]
    rewrite(files)
    ruff = str(Path(sys.executable).parent / "ruff")
    subprocess.run([ruff, "check", "-q", "--fix", "--select", "I,F401", "tests", "bench"], cwd=ROOT)
    subprocess.run([ruff, "format", "-q", "tests", "bench"], cwd=ROOT, check=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["apply"]:
        apply()
    elif sys.argv[1:2] == ["rewrite"]:
        rewrite([Path(p).resolve() for p in sys.argv[2:]])
    else:
        sys.exit(__doc__)
