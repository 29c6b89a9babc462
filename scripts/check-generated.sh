#!/usr/bin/env bash
# Fails when generated/ differs from what `make generate` produces from protos/.
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
