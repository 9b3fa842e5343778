"""``python -m tests.bench [name ...] [--json PATH] [--strict]``: run benchmarks, print a table.

To add a benchmark, write ``tests/bench/bench_<name>.py`` with ``run() -> list[Row]`` and add its
module name to ``BENCHMARKS``. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence

from ._results import Row, format_table

BENCHMARKS: tuple[str, ...] = (
    "tests.bench.bench_bus",
    "tests.bench.bench_redis",
    "tests.bench.bench_pipeline",
    "tests.bench.bench_end_to_end",
    "tests.bench.bench_outage",
    "tests.bench.bench_crash",
)


def _machine() -> list[str]:
    import os
    import platform

    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = []
    for package in ("zmq", "msgpack", "redis"):
        try:
            module = importlib.import_module(package)
            versions.append("{} {}".format(package, getattr(module, "__version__", "?")))
        except ImportError:
            continue
    return ["- {} cores, {}".format(os.cpu_count(), model),
            "- Python {} on {}".format(platform.python_version(), platform.platform()),
            "- " + ", ".join(versions)]


def markdown_report(rows: list[Row], modules: list[str], seconds: float, argv: str) -> str:
    """docs/performance.md: each figure beside its same-run baseline, the machine, the command."""
    lines = ["# Performance", "",
             "Written by `make bench` ({} s, {}). Every figure stands beside a baseline "
             "measured in the same run on the same machine, because these machines change "
             "CPU speed several times a second; ratio = value / baseline.".format(
                 round(seconds), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())), "",
             "Machine:", ""] + _machine() + [
             "", "Reproduce: `make bench` (or `.venv/bin/python -m tests.bench {}`)".format(
                 argv or " ".join(_short(m) for m in modules)), "",
             "| benchmark | value | unit | baseline | ratio | target | met |",
             "| --- | ---: | --- | --- | ---: | --- | --- |"]
    def number(value: float) -> str:
        return "{:,.0f}".format(value) if abs(value) >= 100 else "{:.3g}".format(value)

    for row in rows:
        baseline = "" if row.baseline is None else "{} ({})".format(
            number(row.baseline), row.baseline_name)
        target = row.target_text(number)
        met = {None: "", True: "yes", False: "**no**"}[row.met]
        ratio = "" if row.ratio is None else "{:.2f}".format(row.ratio)
        lines.append("| {} | {} | {} | {} | {} | {} | {} |".format(
            row.name, number(row.value), row.unit, baseline, ratio, target, met))
    lines.append("")
    return "\n".join(lines)


def _short(module: str) -> str:
    return module.rsplit(".", 1)[-1].replace("bench_", "", 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="name",
                        help="run only these benchmarks (e.g. 'bus'); default: all of {}".format(
                            ", ".join(_short(module) for module in BENCHMARKS)))
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    parser.add_argument("--report", metavar="PATH",
                        help="also write a Markdown report (e.g. docs/performance.md)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a row misses its target")
    args = parser.parse_args(argv)

    selected = [module for module in BENCHMARKS
                if not args.names or _short(module) in args.names]
    unknown = set(args.names) - {_short(module) for module in BENCHMARKS}
    if unknown:
        parser.error("unknown benchmark(s): {}".format(", ".join(sorted(unknown))))

    rows: list[Row] = []
    started = time.monotonic()
    for name in selected:
        print("== {}".format(name), file=sys.stderr, flush=True)
        module_started = time.monotonic()
        module_rows = importlib.import_module(name).run()
        print("== {} took {:.1f} s".format(name, time.monotonic() - module_started),
              file=sys.stderr, flush=True)
        rows.extend(module_rows)

    print()
    print(format_table(rows))
    print("\n({} benchmark module(s), {:.1f} s)".format(len(selected),
                                                       time.monotonic() - started))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump([row.as_dict() for row in rows], handle, indent=2)
            handle.write("\n")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as handle:
            handle.write(markdown_report(rows, selected, time.monotonic() - started,
                                         " ".join(sys.argv[1:])))
        print("report written to {}".format(args.report), file=sys.stderr)
    if args.strict and any(row.met is False for row in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
