"""`make demo`: load the reference service with the production-like scenario and say where
the results are. The Makefile has already created .venv, installed the project and trained
the models."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.cli import main

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    argv = [
        "run",
        str(ROOT / "scenarios" / "production.py"),
        "--serve", "reference",
        "--rate", "40",
        "--duration", "20s",
        "--warmup", "5s",
        "--out", str(ROOT / "runs"),
        "--tag", "source=make-demo",
    ]
    print("harness " + " ".join(argv), flush=True)
    code = main(argv)
    runs = sorted((ROOT / "runs").glob("*"), key=lambda p: p.stat().st_mtime)
    if runs:
        latest = runs[-1]
        print(f"\nThe run directory is {latest}")
        for name in ("report.html", "summary.json"):
            if (latest / name).exists():
                print(f"  {name}: {latest / name}")
        print(f"Print its summary again with: .venv/bin/harness summary {latest}")
    sys.exit(code)
