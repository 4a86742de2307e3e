"""Mutation run: break the math one way at a time and check that the test suite turns red.

Each mutant is a (name, file, original text, replacement) edit, listed per method in
``tools/mutations/<method>.py``. For each, the repository is copied to
a temporary directory, the edit applied, and the tests that guard the file run there (a method's
module: its generic proof, its own test file and its doctests; anything else: the whole proof); a
mutant that leaves them green is a hole in the proof. Usage::

    .venv/bin/python tools/mutants.py            # all mutants
    .venv/bin/python tools/mutants.py st         # those whose name starts with "st"
    .venv/bin/python tools/mutants.py --jobs 2   # two mutants at a time (same order of output)

Not part of the test suite (it runs the suite once per mutant); the results go in the closing
note of the change that adds a method.
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def load_mutants() -> list[tuple[str, str, str, str]]:
    """Every method's mutants, from ``tools/mutations/<method>.py`` (a method adds its own file)."""
    files = sorted((ROOT / "tools" / "mutations").glob("*.py"))
    return [mutant for path in files for mutant in runpy.run_path(str(path))["MUTANTS"]]


MUTANTS = load_mutants()


def guards(paths: list[str]) -> tuple[list[str], str]:
    """pytest's arguments for the tests that stand guard over ``paths``, and the methods the proof
    is restricted to (``KDREF_METHODS``; empty: all): for methods' modules, the generic proof of
    exactly those methods, their own test files and the modules' doctests; for anything else, the
    whole proof. The control runs the guards of every file the mutants touch."""
    methods = sorted({Path(path).stem for path in paths})
    own = [f"tests/{test.name}" for test in sorted((ROOT / "tests").glob("test_*.py"))
           if any(_tests_method(test, m) for m in methods)]
    if all(Path(path).parent.name in ("reference", "torch") for path in paths):
        return ["tests/test_proof.py", *own, "--doctest-modules", *paths], ",".join(methods)
    return ["tests/test_proof.py", "tests/test_harness_can_fail.py", *own, "--doctest-modules", *paths], ""


def _tests_method(test: Path, method: str) -> bool:
    """Whether a test file is the method's own (``test_<method>.py``) or imports its modules (the
    logit methods share ``test_edge_cases.py``)."""
    text = test.read_text(encoding="utf-8")
    return test.name == f"test_{method}.py" or re.search(
        rf"from kdref\.(reference|torch)(\.{method} import| import {method}\b)", text) is not None


def run(base: Path, guarded: tuple[list[str], str], threads: int, path: str = "", old: str = "",
        new: str = "") -> tuple[bool, float, str]:
    """Runs the ``guarded`` tests (:func:`guards`) in a copy of ``base`` with ``old`` replaced by
    ``new`` in ``path``: red or green, seconds, the first failure."""
    tests, methods = guarded
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(base, copy)
        if path:
            target = copy / path
            target.write_text(target.read_text().replace(old, new))
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                              cwd=copy, capture_output=True, text=True,
                              env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": str(threads),
                                   "KDREF_METHODS": methods})
        failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
        return proc.returncode != 0, time.perf_counter() - start, (failed or [""])[0][:150]


def mutation_run(base: Path, mutants: list[tuple[str, str, str, str]], jobs: int) -> int:
    stale = [f"{name}: the original text occurs {count} times in {path}" for name, path, old, _ in mutants
             if (count := (base / path).read_text().count(old)) != 1]
    if stale:  # all of them at once, before anything runs
        print("\n".join(stale))
        return 2
    threads = max(1, (os.cpu_count() or 1) // jobs)  # BLAS/OpenMP threads per test run: no oversubscription
    wall = time.perf_counter()
    # the control: an unmutated copy must pass the same tests, or every "kill" below would mean nothing
    failed, seconds, first_failure = run(base, guards(sorted({path for _, path, _, _ in mutants})), threads)
    if failed:
        print(f"the unmutated copy fails its tests ({seconds:.0f} s): fix that first  {first_failure}")
        return 2
    print(f"control passes ({seconds:.0f} s)", flush=True)
    survivors = 0
    with ThreadPoolExecutor(jobs) as pool:  # map yields the results in the order of the list
        for (name, *_), (killed, seconds, first_failure) in zip(
                mutants, pool.map(lambda m: run(base, guards([m[1]]), threads, *m[1:]), mutants), strict=True):
            survivors += not killed
            print(f"{'killed ' if killed else 'SURVIVED'}  {name}  ({seconds:.0f} s)  {first_failure}", flush=True)
    print(f"{len(mutants) - survivors} killed, {survivors} survived, {time.perf_counter() - wall:.0f} s in all")
    return 1 if survivors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Mutation run of the proof (see the module docstring).")
    parser.add_argument("prefix", nargs="?", default="",
                        help="a method's name (its mutants exactly: 'st' is not 'nst'), or the start of mutants' names")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at a time, each in its own copy")
    args = parser.parse_args()
    methods = {name.split("/")[0] for name, *_ in MUTANTS}
    mutants = [m for m in MUTANTS if (m[0].split("/")[0] == args.prefix if args.prefix in methods
                                      else m[0].startswith(args.prefix))]
    if not mutants:
        print(f"no mutant's name starts with {args.prefix!r}")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        # one snapshot of the working tree: edits made while the run goes on do not reach it
        base = Path(tmp) / "repo"
        shutil.copytree(ROOT, base, ignore=shutil.ignore_patterns(".venv", ".git", "docs", "__pycache__"))
        return mutation_run(base, mutants, args.jobs)


if __name__ == "__main__":
    sys.exit(main())
