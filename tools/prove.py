"""Run the proof harness on one method's record and print what fails.

    .venv/bin/python tools/prove.py at [--checks golden,bad_input] [--thorough] [--verbose]

Imports ``kdref/records/<method>.py`` alone (not the whole registry), so a method under
construction can be proven while another record does not import.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from kdref.proof import CHECK_NAMES, run_checks


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("method", help="a method with a record kdref/records/<method>.py, e.g. at")
    parser.add_argument("--checks", default=None, help=f"comma-separated subset of: golden, {', '.join(CHECK_NAMES)}")
    parser.add_argument("--thorough", action="store_true", help="the deep example budget of every check")
    parser.add_argument("--verbose", action="store_true", help="print passing checks too")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    method = importlib.import_module(f"kdref.records.{args.method}").METHOD
    start = time.perf_counter()
    checks = args.checks.split(",") if args.checks else None
    results = run_checks(method, checks=checks, thorough=args.thorough)
    failed = [r for r in results if not r.ok]
    for r in results:
        if not r.ok or args.verbose:
            print(f"{'ok  ' if r.ok else 'FAIL'} {r.case} {r.check} examples={r.examples} "
                  f"worst={r.worst} ratio={r.ratio} {r.seconds:.1f}s\n{r.detail if not r.ok else ''}".rstrip())
    print(f"{len(results) - len(failed)} of {len(results)} checks passed in {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
