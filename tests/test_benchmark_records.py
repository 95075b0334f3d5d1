"""benchmarks/conftest.py's day file: a later run adds its rows, and rows measured on another CPU keep their own."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("bench_conftest",
                                               Path(__file__).parents[1] / "benchmarks" / "conftest.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

AMD = {"cpu": "AMD EPYC", "cores": 2, "arch": "x86_64"}
INTEL = {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2, "arch": "x86_64"}


def test_a_later_run_adds_rows_and_keeps_the_machine_each_was_measured_on():
    old = {"date": "2026-12-05T03:02:18+00:00", "machine": AMD,
           "results": {"fields per second": {"fps": 63.9, "command": "pytest benchmarks/test_daemon.py"}}}
    out = bench.merge_day(old, {"accuracy": {"accuracy": 0.615}}, INTEL, "2026-12-05T09:41:11+00:00", "pytest x")
    assert out["machine"] == INTEL and out["date"] == "2026-12-05T09:41:11+00:00"
    assert out["results"]["accuracy"] == {"accuracy": 0.615, "command": "pytest x"}
    assert out["results"]["fields per second"] == {"fps": 63.9, "command": "pytest benchmarks/test_daemon.py",
                                                   "machine": AMD, "date": "2026-12-05T03:02:18+00:00"}
    again = bench.merge_day(out, {"accuracy": {"accuracy": 0.62}}, INTEL, "2026-12-05T10:00:00+00:00", "pytest y")
    assert again["results"]["fields per second"]["machine"] == AMD  # still the AMD's, a run later
    same = bench.merge_day(old, {}, AMD, "2026-12-05T04:00:00+00:00", "pytest z")  # the same machine: no copies
    assert "machine" not in same["results"]["fields per second"]
