#!/usr/bin/env bash
# Generates Python code for protos/ into the directory given (default: generated/).
# Usage: scripts/generate.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-generated}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
rm -rf "$out/beacon"
mkdir -p "$out/beacon/v1"
wkt=$("$py" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
PATH="$(dirname "$py"):$PATH" "$py" -m grpc_tools.protoc -I protos -I "$wkt" \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out=quiet:"$out" --mypy_grpc_out=quiet:"$out" \
  protos/beacon/v1/*.proto
touch "$out/beacon/__init__.py" "$out/beacon/v1/__init__.py"
