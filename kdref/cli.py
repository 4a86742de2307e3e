"""The ``kdref`` command: ``kdref list``, ``kdref verify`` and ``kdref bench``.

``kdref verify`` runs the proof harness (:mod:`kdref.proof`) — the same checks as the test
suite — on this machine, prints a table method × case × check with the worst error seen, and
exits non-zero if anything fails.
"""

from __future__ import annotations

import argparse
import sys
import time

from kdref.proof import CHECKS, Result, run_checks


def _methods(names: list[str]):
    from kdref import get
    from kdref.records import METHODS

    return [get(n) for n in names] if names else list(METHODS.values())


def cmd_list(args: argparse.Namespace) -> int:
    for method in _methods([]):
        print(f"{method.name:8} {method.title}")
        print(f"{'':8} {method.citation}")
        for loss in method.losses:
            conventions = loss.conventions
            names = [n + (" (default)" if n == conventions.default else "") for n in conventions.presets]
            names += [f"{a} (= {t})" for a, t in conventions.aliases.items()]
            print(f"{'':8}   {loss.name}: {', '.join(names)}")
        print()
    return 0


def _format_number(x: float | None) -> str:
    return "-" if x is None else f"{x:.1e}"


def _table(results: list[Result]) -> str:
    header = ("case", "check", "result", "examples", "worst |Δ|", "|Δ|/tol")
    rows = [(r.case, r.check, "ok" if r.ok else "FAIL", str(r.examples), _format_number(r.worst),
             _format_number(r.ratio)) for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header), line.format(*("-" * w for w in widths))]
    out += [line.format(*row) for row in rows]
    return "\n".join(out)


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        import torch
    except ImportError:
        print("kdref verify needs PyTorch: it proves kdref.torch against kdref.reference.", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available here.", file=sys.stderr)
        return 2
    try:
        methods = _methods(args.methods)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # the proof's inputs are tiny: intra-op threads only add overhead
    checks = args.checks.split(",") if args.checks else CHECKS
    unknown = set(checks) - set(CHECKS)
    if unknown:
        print(f"unknown check(s) {sorted(unknown)}; valid: {', '.join(CHECKS)}", file=sys.stderr)
        return 2

    results: list[Result] = []
    start = time.perf_counter()
    for method in methods:
        print(f"verifying {method.name} on {args.device} ({len(method.cases())} cases)", file=sys.stderr)

        def progress(result: Result) -> None:
            mark = "." if result.ok else "F"
            print(mark, end="", file=sys.stderr, flush=True)

        results += run_checks(method, device=args.device, max_examples=args.max_examples, checks=checks,
                              progress=progress)
        print(file=sys.stderr)
    print(_table(results))
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"\nFAIL {r.case} {r.check}\n{r.detail}")
    elapsed = time.perf_counter() - start
    print(f"\n{len(results) - len(failed)} of {len(results)} checks passed in {elapsed:.0f} s "
          f"(torch {torch.__version__}, device {args.device}).")
    return 1 if failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from kdref import bench

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("--device cuda: no CUDA device is available here.", file=sys.stderr)
            return 2
    try:
        report = bench.run(args.method, device=args.device, repeats=args.repeats, threads=args.threads,
                           progress=lambda line: print(line, file=sys.stderr, flush=True))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(bench.markdown(report))
    if not args.no_save:
        for path in bench.save(report):
            print(f"wrote {path}", file=sys.stderr)
    missed = [c["name"] for c in report["cases"] if not all(c.get("met", {}).values())]
    if missed:
        print(f"targets missed: {', '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdref", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the implemented methods, their citations and conventions")
    verify = sub.add_parser("verify", help="prove kdref.torch equal to kdref.reference on this machine")
    verify.add_argument("methods", nargs="*", metavar="METHOD", help="methods to verify (default: all)")
    verify.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the torch side runs; the reference always runs in float64 NumPy")
    verify.add_argument("--max-examples", type=int, default=30,
                        help="Hypothesis examples per randomized check (default 30)")
    verify.add_argument("--checks", default=None, help=f"comma-separated subset of: {', '.join(CHECKS)}")
    bench = sub.add_parser("bench", help="time and peak memory of kdref.torch vs the popular formulation")
    bench.add_argument("method", help="a method with a benchmarks/<method>.py")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    bench.add_argument("--repeats", type=int, default=7, help="timed forward+backward passes per variant")
    bench.add_argument("--threads", type=int, default=0, help="torch CPU threads per variant (default: torch's)")
    bench.add_argument("--no-save", action="store_true", help="print only; do not write benchmarks/results/")
    args = parser.parse_args(argv)
    return {"list": cmd_list, "verify": cmd_verify, "bench": cmd_bench}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
