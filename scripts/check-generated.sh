#!/usr/bin/env bash
# Fails when generated/ or the generated docs differ from what `make generate` produces.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
scripts/generate.sh "$tmp" >/dev/null
if ! diff -r -q -x __pycache__ "$tmp/beacon" generated/beacon; then
  echo "generated/ is stale: run 'make generate' and commit the result" >&2
  exit 1
fi
echo "generated/ is up to date"

# docs/api.md's per-RPC table is generated from the contract too.
cp docs/api.md "$tmp/api.md"
"${PYTHON:-.venv/bin/python}" scripts/api_table.py --update "$tmp/api.md" >/dev/null
if ! diff -q "$tmp/api.md" docs/api.md >/dev/null; then
  echo "docs/api.md's RPC table is stale: run '.venv/bin/python scripts/api_table.py --update docs/api.md'" >&2
  exit 1
fi
echo "docs/api.md's RPC table is up to date"

# docs/configuration.md's settings table is generated from service.config.Settings.
cp docs/configuration.md "$tmp/configuration.md"
"${PYTHON:-.venv/bin/python}" scripts/settings_table.py --update "$tmp/configuration.md"
if ! diff -q "$tmp/configuration.md" docs/configuration.md >/dev/null; then
  echo "docs/configuration.md's settings table is stale: run 'make generate'" >&2
  exit 1
fi
echo "docs/configuration.md's settings table is up to date"
