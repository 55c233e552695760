"""Run every benchmark in this folder, in one process per script, and print their output.

Benchmarks never assert timings (timings are not tests); they print figures and ratios."""

from __future__ import annotations

import pathlib
import subprocess
import sys


def main() -> int:
    here = pathlib.Path(__file__).parent
    rc = 0
    for script in sorted(here.glob("bench_*.py")):
        print(f"=== {script.name}", flush=True)
        r = subprocess.run([sys.executable, str(script)], check=False)
        rc = rc or r.returncode
    return rc


if __name__ == "__main__":
    sys.exit(main())
