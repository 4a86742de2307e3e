"""The benchmark runner's plumbing (no timing is asserted: numbers depend on the machine)."""

from __future__ import annotations

import torch

from kdref import bench

TINY = bench.Benchmark(
    name="tiny", description="a tiny sum of squares",
    make_inputs=lambda device, dtype: {"x": torch.ones(8, 8, device=device, dtype=dtype, requires_grad=True)},
    variants={"kdref": lambda d: (d["x"] ** 2).sum(), "naive": lambda d: (d["x"] * d["x"]).sum()},
    targets={"memory_ratio": 1e9},
)


def test_measure_reports_time_and_peak_memory():
    result = bench.measure(TINY, "kdref", "cpu", repeats=3)
    assert len(result["times_s"]) == 3 and result["median_s"] > 0 and result["peak_bytes"] >= 0


def test_markdown_reports_ratios_and_targets():
    results = {"kdref": {"median_s": 1.0, "peak_bytes": 2**20}, "naive": {"median_s": 4.0, "peak_bytes": 2**24}}
    report = {"date": "today", "machine": "m", "torch": "t", "device": "cpu", "repeats": 3, "method": "x",
              "cases": [{"name": "tiny", "description": "", "dtype": "float32", "results": results,
                         "targets": {"memory_ratio": 0.1, "time_ratio": 0.1}, "time_ratio": 0.25,
                         "memory_ratio": 1 / 16, "met": {"memory_ratio": True, "time_ratio": False}}]}
    table = bench.markdown(report)
    assert "| tiny | 1000.00 ms | 4000.00 ms | 0.25 | 1.0 MiB | 16.0 MiB | 0.0625 |" in table
    assert "memory_ratio ≤ 0.1: met" in table and "time_ratio ≤ 0.1: MISSED" in table


def test_every_shipped_benchmark_file_loads():
    for path in sorted(bench.BENCHMARK_DIR.glob("*.py")):
        cases = bench.load(path.stem)
        # a case without the naive form (it does not fit in memory) has kdref's own peak as its target
        assert cases and all({"kdref", "naive"} <= set(c.variants) or "peak_bytes" in c.targets for c in cases), path
        assert all("kdref" in c.variants for c in cases), path
