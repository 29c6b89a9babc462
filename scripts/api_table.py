"""Prints the per-RPC table of docs/api.md from the contract: auth level, rate limits, request
limits, errors.

Auth, rate limits and request limits come from the `(beacon.v1.auth)` /
`(beacon.v1.rate_limit)` / `(beacon.v1.max_request_bytes)` options of the generated
descriptors and the `(beacon.v1.max_items)` options of the request's repeated fields; the
errors from the "Errors:" part of each RPC's comment in protos/, plus the ones every RPC of
its level can return.

Usage: .venv/bin/python scripts/api_table.py            # print the table
       .venv/bin/python scripts/api_table.py --update docs/api.md   # rewrite it in place
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from google.protobuf.descriptor import MethodDescriptor

from beacon.v1 import options_pb2
from service.rpc_options import SERVICE_FILES, method_rules

ROOT = Path(__file__).resolve().parent.parent
START = "<!-- rpc-table:start -->"
END = "<!-- rpc-table:end -->"
LEVELS = {
    options_pb2.AUTH_LEVEL_OPEN: "open",
    options_pb2.AUTH_LEVEL_PROTECTED: "protected",
    options_pb2.AUTH_LEVEL_WORKSPACE_MEMBER: "workspace member",
    options_pb2.AUTH_LEVEL_WORKSPACE_OWNER: "workspace owner",
    options_pb2.AUTH_LEVEL_ORGANIZATION_ADMIN: "organization admin",
    options_pb2.AUTH_LEVEL_ORGANIZATION_MEMBER: "organization member",
    options_pb2.AUTH_LEVEL_ORGANIZATION_BILLING: "organization billing",
}
KEYS = {
    options_pb2.RATE_LIMIT_KEY_USER: "user",
    options_pb2.RATE_LIMIT_KEY_WORKSPACE: "workspace",
    options_pb2.RATE_LIMIT_KEY_PEER: "peer",
}
RESOURCE_LEVELS = {
    options_pb2.AUTH_LEVEL_WORKSPACE_MEMBER,
    options_pb2.AUTH_LEVEL_WORKSPACE_OWNER,
    options_pb2.AUTH_LEVEL_ORGANIZATION_ADMIN,
    options_pb2.AUTH_LEVEL_ORGANIZATION_MEMBER,
    options_pb2.AUTH_LEVEL_ORGANIZATION_BILLING,
}
ROLE_LEVELS = {
    options_pb2.AUTH_LEVEL_WORKSPACE_OWNER,
    options_pb2.AUTH_LEVEL_ORGANIZATION_ADMIN,
    options_pb2.AUTH_LEVEL_ORGANIZATION_BILLING,
}
_CODE = re.compile(r"\b[A-Z][A-Z_]{4,}\b")
CODES = {
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "RESOURCE_EXHAUSTED",
    "UNAVAILABLE",
}
_RPC = re.compile(r"((?:[ \t]*//[^\n]*\n)+)[ \t]*rpc\s+(\w+)\s*\(")


def rpc_comments() -> dict[str, str]:
    """The leading comment of every RPC in protos/, by RPC name, joined into one line."""
    comments: dict[str, str] = {}
    for path in sorted((ROOT / "protos/beacon/v1").glob("*_service.proto")):
        for block, name in _RPC.findall(path.read_text()):
            lines = [line.strip().removeprefix("//").strip() for line in block.splitlines()]
            comments[name] = " ".join(line for line in lines if line)
    return comments


def _period(seconds: int) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def auth_text(method: MethodDescriptor) -> str:
    rule = method.GetOptions().Extensions[options_pb2.auth]
    text = LEVELS.get(rule.level, "unspecified")
    if rule.resource_fields:
        text += f" on `{'` / `'.join(rule.resource_fields)}`"
    if rule.service_scope:
        text += f"; or a service key with scope `{rule.service_scope}`"
    return text


def limits_text(method: MethodDescriptor) -> str:
    parts = []
    for rule in method.GetOptions().Extensions[options_pb2.rate_limit]:
        text = f"{rule.requests} / {_period(rule.period_seconds)} per {KEYS.get(rule.key, '?')}"
        if rule.when_field:
            text += f" (when `{rule.when_field}` is set)"
        if rule.fail_closed:
            text += ", fail-closed"
        parts.append(text)
    return "; ".join(parts)


def request_limits_text(method: MethodDescriptor) -> str:
    """The request's size limit, then each bounded repeated field, e.g. "2 MiB; `prompts` ≤ 500"."""
    rules = method_rules()[f"/{method.containing_service.full_name}/{method.name}"]
    size = rules.max_request_bytes
    parts = [f"{size >> 20} MiB" if size % (1 << 20) == 0 else f"{size >> 10} KiB"]
    parts += [f"`{'.'.join(b.path)}` ≤ {b.max_items}" for b in rules.item_bounds]
    return "; ".join(parts)


def errors_text(method: MethodDescriptor, comment: str) -> str:
    """The comment's "Errors:" part (or the codes it mentions), then the implied codes."""
    rule = method.GetOptions().Extensions[options_pb2.auth]
    if "Errors:" in comment:
        declared = comment.split("Errors:", 1)[1].strip()
    else:
        declared = ", ".join(dict.fromkeys(c for c in _CODE.findall(comment) if c in CODES))
    implied = []
    if rule.level != options_pb2.AUTH_LEVEL_OPEN:
        implied.append("UNAUTHENTICATED")
    implied.append("INVALID_ARGUMENT")  # every request: its size, its bytes, its values
    if rule.level in RESOURCE_LEVELS:
        implied.append("NOT_FOUND")
    if rule.level in ROLE_LEVELS:
        implied.append("PERMISSION_DENIED")
    implied.append("RESOURCE_EXHAUSTED")
    extra = [code for code in implied if code not in declared]
    return "; ".join(part for part in (declared.rstrip("."), ", ".join(extra)) if part)


def table() -> str:
    comments = rpc_comments()
    lines = [
        "| RPC | Auth level | Rate limits | Request limits | Errors |",
        "| --- | --- | --- | --- | --- |",
    ]
    for file in SERVICE_FILES:
        for service in file.services_by_name.values():
            for method in service.methods:
                comment = comments.get(method.name, "")
                cells = [
                    f"`{service.name}/{method.name}`",
                    auth_text(method),
                    limits_text(method),
                    request_limits_text(method),
                    errors_text(method, comment).replace("|", "\\|"),
                ]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", type=Path, help="rewrite the table between the markers")
    args = parser.parse_args()
    generated = table()
    if args.update is None:
        print(generated)
        return 0
    text = args.update.read_text()
    if START not in text or END not in text:
        print(f"{args.update}: markers {START} / {END} not found", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    args.update.write_text(f"{head}{START}\n{generated}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
