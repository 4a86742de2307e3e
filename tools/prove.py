"""Run the proof harness on one registry record, registered or not, and print what fails.

    .venv/bin/python tools/prove.py kdref.records.at [--max-examples 20] [--checks golden,agreement]

For a method under construction, before its record joins ``kdref.records.METHODS``; the
registered methods are proven by ``kdref verify`` and the test suite.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from kdref.proof import CHECKS, run_checks


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("module", help="a module defining METHOD, e.g. kdref.records.at")
    parser.add_argument("--max-examples", type=int, default=20)
    parser.add_argument("--checks", default=",".join(CHECKS))
    parser.add_argument("--verbose", action="store_true", help="print passing checks too")
    args = parser.parse_args()
    method = importlib.import_module(args.module).METHOD
    start = time.perf_counter()
    results = run_checks(method, max_examples=args.max_examples, checks=args.checks.split(","))
    failed = [r for r in results if not r.ok]
    for r in results:
        if not r.ok or args.verbose:
            print(f"{'ok  ' if r.ok else 'FAIL'} {r.case} {r.check} examples={r.examples} "
                  f"worst={r.worst} ratio={r.ratio}\n{r.detail if not r.ok else ''}".rstrip())
    print(f"{len(results) - len(failed)} of {len(results)} checks passed in {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
