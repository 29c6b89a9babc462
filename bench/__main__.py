"""`make bench`: every benchmark, each printing its own table.

  python -m bench            all of them
  python -m bench rpc        only the RPC benchmark (also: report, insights, ticker, workers, inputs,
                           uploads, webhooks)

The ratios in each table are measured in the same run against a baseline of that run.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = {
    "rpc": "bench.bench_rpc",
    "report": "bench.bench_report",
    "insights": "bench.bench_insights",
    "ticker": "bench.bench_ticker",
    "workers": "bench.bench_workers",
    "inputs": "bench.bench_inputs",
    "uploads": "bench.bench_uploads",
    "webhooks": "bench.bench_webhooks",
}


def main(argv: list[str]) -> int:
    selected = argv or list(BENCHMARKS)
    unknown = [name for name in selected if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in selected:
        print(f"\n=== {name} ===", flush=True)
        if subprocess.run([sys.executable, "-m", BENCHMARKS[name]]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
