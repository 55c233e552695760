"""Smoke test of the client benchmark: it runs, both clients answer, the table is printed.

Benchmarks are run by hand or by ``make bench``, so without this test a change to either
client API, to the worker protocol or to the benchmark could break ``bench_client.py``
unnoticed.  Timings are never asserted: the run is short and the machine shared, so only the
shape of the output is.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_client.py"


def test_bench_client_quick_c1() -> None:
    r = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--only", "C1"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # a C1 row with both figures and a capva/p4p ratio, then the targets summary
    assert re.search(r"^C1 gets/s .*\d\.\d\dx", r.stdout, re.M), r.stdout
    assert re.search(r"^targets: ", r.stdout, re.M), r.stdout
