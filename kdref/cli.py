"""The ``kdref`` command: ``kdref list``, ``kdref verify``, ``kdref check`` and ``kdref bench``.

``kdref verify`` runs the proof harness (:mod:`kdref.proof`) — the same checks as the test
suite — on this machine, prints a table method × case × check with the worst error seen, and
exits non-zero if anything fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from kdref.proof import CHECK_NAMES, Result, check, plan, select


def _methods(names: list[str]):
    from kdref import get
    from kdref.records import METHODS

    return [get(n) for n in names] if names else list(METHODS.values())


def cmd_list(args: argparse.Namespace) -> int:
    """Each method, its citation, and each loss's conventions with what they compute (the library
    an alias names reproduces its preset)."""
    for method in _methods(args.methods):
        print(f"{method.name:8} {method.title}")
        print(f"{'':8} {method.citation}")
        for loss in method.losses:
            conventions = loss.conventions
            print(f"{'':8}   {loss.name}:")
            for name in conventions.presets:
                aliases = [a for a, target in conventions.aliases.items() if target == name]
                label = name + (" (default)" if name == conventions.default else "")
                label += f" = {', '.join(aliases)}" if aliases else ""
                print(f"{'':8}     {label}: {conventions.descriptions.get(name, '')}")
        print()
    return 0


def _format_number(x: float | None) -> str:
    return "-" if x is None else f"{x:.1e}"


def _table(results: list[Result]) -> str:
    header = ("case", "check", "result", "examples", "worst |Δ|", "|Δ|/tol", "seconds")
    rows = [(r.case, r.check, "ok" if r.ok else "FAIL", str(r.examples), _format_number(r.worst),
             _format_number(r.ratio), f"{r.seconds:.1f}") for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header), line.format(*("-" * w for w in widths))]
    out += [line.format(*row) for row in rows]
    return "\n".join(out)


def _costs(results: list[Result]) -> str:
    """What each check cost in all (process seconds, summed over its runs), costliest first."""
    totals: dict[str, list[float]] = {}
    for r in results:
        totals.setdefault(r.check, []).append(r.seconds)
    ranked = sorted(totals.items(), key=lambda item: -sum(item[1]))
    return "seconds by check: " + ", ".join(f"{name} {sum(s):.0f} ({len(s)} runs, {sum(s) / len(s):.2f} each)"
                                            for name, s in ranked)


def _step_key(check, target) -> tuple:
    """A picklable name of one step of the plan, for a worker process."""
    if isinstance(target, tuple):
        return (check.name, target[0].name, target[1].name, None)
    return (check.name, target.method.name, target.loss.name, target.convention)


def _run_step(key: tuple, device: str, thorough: bool) -> Result:
    """Run one step of the plan by name (in a worker process, or here)."""
    import torch

    from kdref import get
    from kdref.registry import Case

    torch.set_num_threads(1)  # the proof's inputs are tiny: intra-op threads only add overhead
    name, method_name, loss_name, convention = key
    method = get(method_name)
    loss = method.loss(loss_name)
    target = (method, loss) if convention is None else Case(method, loss, convention)
    return check(name)(target, device=device, thorough=thorough)


def _progress():
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                    TextColumn("left"), TimeRemainingColumn(), console=Console(stderr=True), transient=False)


def _verify(steps: list, device: str, thorough: bool, jobs: int) -> list[Result]:
    """Run every step, ``jobs`` processes at a time, with a live display of what runs and an
    estimate of the time left (each check's typical cost, from the table, weighs its step)."""
    results: list[Result | None] = [None] * len(steps)
    keys = [_step_key(c, t) for c, t in steps]
    weights = [c.cost * (c.thorough / c.examples if thorough and c.examples else 1) for c, _ in steps]
    with _progress() as progress:
        task = progress.add_task("", total=sum(weights))

        def show(pending: list[int]) -> None:
            running = ", ".join(f"{keys[i][1]}:{keys[i][2]}/{keys[i][3] or '*'} {keys[i][0]}" for i in pending[:jobs])
            progress.update(task, description=running[:100])

        if jobs == 1:
            for i in range(len(steps)):
                show([i])
                results[i] = _run_step(keys[i], device, thorough)
                progress.advance(task, weights[i])
        else:
            import multiprocessing
            from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

            context = multiprocessing.get_context("spawn")  # torch's thread pools do not survive fork
            with ProcessPoolExecutor(jobs, mp_context=context) as pool:
                futures = {pool.submit(_run_step, key, device, thorough): i for i, key in enumerate(keys)}
                pending = sorted(futures.values())
                show(pending)
                while pending:
                    done, _ = wait([f for f, i in futures.items() if results[i] is None], return_when=FIRST_COMPLETED)
                    for future in done:
                        i = futures[future]
                        results[i] = future.result()
                        pending.remove(i)
                        progress.advance(task, weights[i])
                    show(pending)
        progress.update(task, description="done")
    return results  # type: ignore[return-value]


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
        checks = select(args.checks.split(",") if args.checks else None)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    # the costliest steps first, so that parallel workers finish together; the table keeps the plan's order
    steps = plan(methods, checks)
    order = sorted(range(len(steps)), key=lambda i: -steps[i][0].cost)
    jobs = args.jobs or (1 if args.device == "cuda" else len(os.sched_getaffinity(0)))
    budget = "thorough" if args.thorough else "default"
    print(f"verifying {', '.join(m.name for m in methods)} on {args.device}: {len(steps)} checks, {budget} "
          f"example budget, {jobs} process(es)", file=sys.stderr)
    start = time.perf_counter()
    ran = _verify([steps[i] for i in order], args.device, args.thorough, jobs)
    results: list[Result] = [None] * len(steps)  # type: ignore[list-item]
    for i, result in zip(order, ran, strict=True):
        results[i] = result
    print(_table(results))
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"\nFAIL {r.case} {r.check}\n{r.detail}")
    print("\n" + _costs(results))
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


def _load(target: str):
    """``MODULE:CALLABLE`` (a dotted module, or a ``.py`` file) to the object; a class is instantiated."""
    import importlib
    import importlib.util
    import inspect
    from pathlib import Path

    module_name, _, attribute = target.rpartition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected MODULE:CALLABLE (mypackage.losses:kd_loss or path/to/file.py:kd_loss), "
                         f"got {target!r}")
    if module_name.endswith(".py"):
        spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        module = importlib.import_module(module_name)
    obj = getattr(module, attribute)
    return obj() if inspect.isclass(obj) else obj


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{what} expects NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def _inputs(method: str, loss: str | None, given: dict[str, str]) -> dict[str, int | str | None]:
    """``--input`` on top of the default (the required arguments by position, in kdref's order): a
    name given a keyword or ``-`` leaves the positions, the others keep their order."""
    from kdref import get

    record = get(method)
    declared = (record.losses[0] if loss is None else record.loss(loss)).args
    where = {k: None if v == "-" else int(v) if v.isdigit() else v for k, v in given.items()}
    positional = [a.name for a in declared if not a.optional and a.name not in where]
    taken = {v for v in where.values() if isinstance(v, int)}
    free = (i for i in range(len(positional) + len(taken)) if i not in taken)
    return {**{name: next(free) for name in positional}, **where}


def cmd_check(args: argparse.Namespace) -> int:
    import ast

    from kdref.checker import check

    def literal(text: str):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text

    try:
        fn = _load(args.target)
        inputs = _inputs(args.method, args.loss, _pairs(args.input, "--input"))
        fixed = {k: literal(v) for k, v in _pairs(args.fixed, "--fixed").items()}
        report = check(fn, args.method, args.loss, inputs=inputs, fixed=fixed, dtype=args.dtype, device=args.device,
                       backend="numpy" if args.numpy else "torch", max_examples=args.examples,
                       detached=not args.not_detached)
    except (ValueError, TypeError, KeyError, ImportError, AttributeError) as exc:
        print(f"kdref check: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0 if report.ok and (args.convention is None or args.convention in report.matches or any(
        args.convention in report.verdict(c).aliases for c in report.matches)) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdref", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="the implemented methods, their citations and conventions")
    listing.add_argument("methods", nargs="*", metavar="METHOD", help="methods to list (default: all)")
    verify = sub.add_parser("verify", help="prove kdref.torch equal to kdref.reference on this machine")
    verify.add_argument("methods", nargs="*", metavar="METHOD", help="methods to verify (default: all)")
    verify.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the torch side runs; the reference always runs in float64 NumPy")
    verify.add_argument("--thorough", action="store_true",
                        help="the deep example budget of every check (several times longer)")
    verify.add_argument("--checks", default=None, help=f"comma-separated subset of: golden, {', '.join(CHECK_NAMES)}")
    verify.add_argument("--jobs", type=int, default=0,
                        help="worker processes (default: one per CPU core on cpu, 1 on cuda)")
    checking = sub.add_parser("check", help="check your own loss against every convention of a kdref loss")
    checking.add_argument("target", metavar="MODULE:CALLABLE",
                          help="your loss: a function or nn.Module (a class is instantiated without arguments)")
    checking.add_argument("--method", required=True, help="the kdref method (kdref list shows them)")
    checking.add_argument("--loss", default=None, help="which loss of the method (default: its first)")
    checking.add_argument("--input", action="append", default=[], metavar="NAME=WHERE",
                          help="how kdref's argument NAME reaches your function: a position (0, 1, ...), a keyword, "
                               "or - for not at all; repeat for each (default: the required ones by position)")
    checking.add_argument("--fixed", action="append", default=[], metavar="NAME=VALUE",
                          help="kdref's value of an argument or knob on every input (temperature hard-coded in "
                               "your loss: --fixed T=4)")
    checking.add_argument("--dtype", default="float64", choices=("float64", "float32", "bfloat16", "float16"))
    checking.add_argument("--device", default="cpu", help="the torch device your loss runs on")
    checking.add_argument("--numpy", action="store_true", help="your loss takes and returns NumPy arrays")
    checking.add_argument("--examples", type=int, default=60, help="inputs to draw beside the spec's")
    checking.add_argument("--convention", default=None, help="exit 0 only if your loss matches this convention")
    checking.add_argument("--not-detached", action="store_true",
                          help="your training loop computes the teacher under no_grad: a teacher gradient through "
                               "the loss is not a problem")
    bench = sub.add_parser("bench", help="time and peak memory of kdref.torch vs the popular formulation")
    bench.add_argument("method", help="a method with a benchmarks/<method>.py")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    bench.add_argument("--repeats", type=int, default=7, help="timed forward+backward passes per variant")
    bench.add_argument("--threads", type=int, default=0, help="torch CPU threads per variant (default: torch's)")
    bench.add_argument("--no-save", action="store_true", help="print only; do not write benchmarks/results/")
    args = parser.parse_args(argv)
    return {"list": cmd_list, "verify": cmd_verify, "check": cmd_check, "bench": cmd_bench}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
