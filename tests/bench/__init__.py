"""Benchmarks: ``make bench`` (``python -m tests.bench``) runs them and prints one table.

Every figure is measured next to a baseline in the same run (DESIGN.md section 10: the CPU speed
flips about 1.8x several times a second, so only same-run ratios mean anything). A benchmark
module has ``run() -> list[Row]`` (``tests.bench._results.Row``) and is listed in
``tests.bench.__main__.BENCHMARKS``.
"""
