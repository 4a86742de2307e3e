"""``kdref bench METHOD``: time and peak memory of kdref.torch against the popular formulation.

Each method's cases live in ``benchmarks/<method>.py`` of the source tree as a list
``BENCHMARKS`` of :class:`Benchmark`: a seeded input maker and the variants to compare, normally
``"kdref"`` (the kdref.torch loss) and ``"naive"`` (the straightforward formulation the popular
implementations use, written in the benchmark file, never shipped as a convention).

Every variant of every case runs in its own process, so that one variant's allocations cannot
hide another's: the child builds the inputs, runs one warm-up forward+backward, then ``repeats``
timed ones, and reports the median time and the peak memory above the baseline taken just
before the first call — on CPU the resident set (Linux ``VmHWM`` after resetting it through
``/proc/self/clear_refs``), on CUDA ``torch.cuda.max_memory_allocated``. The parent prints a
table with the ratios kdref / naive (below 1 is better) and writes
``benchmarks/results/<method>-<device>.{json,md,png}`` for the docs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCHMARK_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
RESULTS_DIR = BENCHMARK_DIR / "results"


@dataclass(frozen=True)
class Benchmark:
    """One comparison: the same inputs through each variant, forward and backward.

    ``make_inputs(device, dtype)`` returns a dict of tensors (those to differentiate with
    ``requires_grad=True``); each variant maps that dict to a scalar loss. ``targets`` are the
    largest acceptable ratios kdref / naive, by ``"time_ratio"`` and ``"memory_ratio"``, or
    kdref's own peak memory in bytes, ``"peak_bytes"`` (for a case where the naive form does not
    fit in memory and has no variant).
    """

    name: str
    description: str
    make_inputs: Callable[[str, Any], Mapping[str, Any]]
    variants: Mapping[str, Callable[[Mapping[str, Any]], Any]]
    targets: Mapping[str, float] = field(default_factory=dict)
    dtype: str = "float32"


def load(method: str) -> list[Benchmark]:
    """The ``BENCHMARKS`` of ``benchmarks/<method>.py``."""
    path = BENCHMARK_DIR / f"{method}.py"
    if not path.is_file():
        available = sorted(p.stem for p in BENCHMARK_DIR.glob("*.py")) if BENCHMARK_DIR.is_dir() else []
        raise ValueError(f"no benchmark for {method!r} in {BENCHMARK_DIR} (available: {', '.join(available) or 'none'};"
                         " kdref bench runs from a source checkout)")
    spec = importlib.util.spec_from_file_location(f"kdref_benchmarks_{method}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.BENCHMARKS)


# ---------------------------------------------------------------------------------------------
# The child process: one variant of one case


def _rss_bytes(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{field_name} not in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset the resident-set high-water mark and return the current resident set (bytes)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _rss_bytes("VmRSS")


def measure(benchmark: Benchmark, variant: str, device: str, repeats: int, threads: int = 0) -> dict:
    """Median forward+backward time and peak memory above baseline of one variant, here
    (``threads`` > 0 sets torch's CPU thread count; 0 keeps torch's default)."""
    import gc

    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    inputs = benchmark.make_inputs(device, getattr(torch, benchmark.dtype))
    tensors = [u for v in inputs.values() for u in (v if isinstance(v, (list, tuple)) else [v])]
    leaves = [v for v in tensors if isinstance(v, torch.Tensor) and v.requires_grad]  # lists of layers too
    fn = benchmark.variants[variant]

    def step() -> None:
        for leaf in leaves:
            leaf.grad = None
        fn(inputs).backward()
        if device == "cuda":
            torch.cuda.synchronize()

    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = _reset_peak_rss()
    step()  # warm-up: also the call whose peak memory counts (later calls reuse its pages)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else _rss_bytes("VmHWM")) - baseline
    return {"median_s": statistics.median(times), "times_s": times, "peak_bytes": max(peak, 0)}


def _child(method: str, name: str, variant: str, device: str, repeats: int, threads: int) -> None:
    benchmark = next(b for b in load(method) if b.name == name)
    print(json.dumps(measure(benchmark, variant, device, repeats, threads)))


# ---------------------------------------------------------------------------------------------
# The parent: every case and variant, the table, the files for the docs


def run_variant(method: str, benchmark: Benchmark, variant: str, device: str, repeats: int,
                threads: int = 0) -> dict:
    """``measure`` in a fresh process; a crash (e.g. out of memory) becomes an ``"error"`` entry."""
    proc = subprocess.run([sys.executable, "-m", "kdref.bench", "--child", method, benchmark.name, variant,
                           device, str(repeats), str(threads)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": f"exit code {proc.returncode}: {proc.stderr.strip()[-500:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ratio(kdref: dict, naive: dict, key: str) -> float | None:
    if "error" in kdref or "error" in naive or not naive[key]:
        return None
    return kdref[key] / naive[key]


def run(method: str, device: str = "cpu", repeats: int = 7, threads: int = 0,
        progress: Callable[[str], None] = print) -> dict:
    """All cases of ``method``: measurements, ratios kdref/naive and whether each target is met."""
    import torch

    report = {"method": method, "device": device, "repeats": repeats, "threads": threads or torch.get_num_threads(),
              "torch": torch.__version__,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"
              + (f", {torch.cuda.get_device_name()}" if device == "cuda" else ""),
              "date": time.strftime("%Y-%m-%d"), "cases": []}
    for benchmark in load(method):
        progress(f"{benchmark.name}: {benchmark.description}")
        results = {}
        for variant in benchmark.variants:
            results[variant] = run_variant(method, benchmark, variant, device, repeats, threads)
            progress(f"  {variant}: {_describe(results[variant])}")
        case = {"name": benchmark.name, "description": benchmark.description, "dtype": benchmark.dtype,
                "results": results, "targets": dict(benchmark.targets)}
        if "kdref" in results and "naive" in results:
            case["time_ratio"] = _ratio(results["kdref"], results["naive"], "median_s")
            case["memory_ratio"] = _ratio(results["kdref"], results["naive"], "peak_bytes")
        if "kdref" in results and "error" not in results["kdref"]:
            case["peak_bytes"] = results["kdref"]["peak_bytes"]  # an absolute target: kdref's own peak
        case["met"] = {k: case.get(k) is not None and case[k] <= v for k, v in benchmark.targets.items()}
        report["cases"].append(case)
    return report


def _describe(result: dict) -> str:
    if "error" in result:
        return f"failed ({result['error'][:120]})"
    return f"{result['median_s'] * 1e3:.2f} ms, peak {result['peak_bytes'] / 2**20:.1f} MiB"


def _target(key: str, value: float) -> str:
    return f"kdref peak ≤ {value / 2**30:.3g} GiB" if key == "peak_bytes" else f"{key} ≤ {value:.3g}"


def markdown(report: dict) -> str:
    """The report as a Markdown table (the docs include it)."""
    lines = [f"Measured {report['date']} on {report['machine']}, torch {report['torch']}, device "
             f"{report['device']}, {report.get('threads', '?')} CPU thread(s); median of {report['repeats']} "
             "forward+backward passes; peak memory above the baseline, each variant in its own process. "
             "Ratios are kdref / naive (below 1: kdref is cheaper).",
             "",
             "| case | kdref time | naive time | time ratio | kdref peak | naive peak | memory ratio | target |",
             "|---|---|---|---|---|---|---|---|"]
    for case in report["cases"]:
        k, n = case["results"].get("kdref", {}), case["results"].get("naive", {})

        def t(r):
            return "not run" if not r else "failed" if "error" in r else f"{r['median_s'] * 1e3:.2f} ms"

        def m(r):
            return "not run" if not r else "failed" if "error" in r else f"{r['peak_bytes'] / 2**20:.1f} MiB"

        def ratio(x):
            return "—" if x is None else f"{x:.3g}"

        targets = ", ".join(f"{_target(key, value)}: {'met' if case['met'][key] else 'MISSED'}"
                            for key, value in case["targets"].items()) or "—"
        lines.append(f"| {case['name']} | {t(k)} | {t(n)} | {ratio(case.get('time_ratio'))} | {m(k)} | {m(n)} | "
                     f"{ratio(case.get('memory_ratio'))} | {targets} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Bar charts of time and peak memory per case and variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = report["cases"]
    variants = sorted({v for c in cases for v in c["results"]}, key=lambda v: (v != "kdref", v))
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.6 * len(cases) + 2.2))
    for ax, key, scale, label in ((axes[0], "median_s", 1e3, "time per forward+backward (ms)"),
                                  (axes[1], "peak_bytes", 2**-20, "peak memory above baseline (MiB)")):
        height = 0.8 / len(variants)
        for i, variant in enumerate(variants):
            values = [c["results"].get(variant, {}).get(key, 0) * scale for c in cases]
            ax.barh([j + i * height for j in range(len(cases))], values, height=height, label=variant)
        ax.set_yticks([j + 0.4 - height / 2 for j in range(len(cases))], [c["name"] for c in cases], fontsize=8)
        shown = [c["results"][v][key] for c in cases for v in c["results"] if c["results"][v].get(key)]
        if shown and max(shown) > 50 * min(shown):  # cases of very different sizes: a log axis shows them all
            ax.set_xscale("log")
            label += ", log scale"
        ax.set_xlabel(label)
        ax.invert_yaxis()
    axes[0].legend()
    fig.suptitle(f"{report['method']} on {report['device']} ({report['machine']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save(report: dict) -> list[Path]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = RESULTS_DIR / f"{report['method']}-{report['device']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    plot(report, stem.with_suffix(".png"))
    return [stem.with_suffix(s) for s in (".json", ".md", ".png")]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="internal: one benchmark variant in this process")
    parser.add_argument("--child", nargs=6, metavar=("METHOD", "CASE", "VARIANT", "DEVICE", "REPEATS", "THREADS"),
                        required=True)
    m, case_name, v, d, r, threads = parser.parse_args().child
    _child(m, case_name, v, d, int(r), int(threads))
