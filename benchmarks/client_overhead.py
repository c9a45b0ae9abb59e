"""The load generator's own time per request, kept-alive and with a new connection each.

    .venv/bin/python benchmarks/client_overhead.py [--rounds 3] [--rate 50] [--duration 10]

``tests/known_latency_server.py`` (constant 5 ms, logging its own service time per request)
is loaded with ``harness run --target`` twice per round, in alternating order: once as a
keep-alive server, once with ``--close`` (``Connection: close`` on every response, as
gunicorn's sync workers answer). For each run it prints what the calibration measured
(the client path on a kept-alive connection and on a new connection per request, p50 and
mean µs), the share of responses that closed their connection, the load generator's own
share of the residual that the summary charged, and, independently, the client's
uncorrected p50 minus the server's own p50 (everything outside the server's measured
window: the client path, the kernel, the server's HTTP layer). The own time charged must
sit below that gap, and follow the connections the run had.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from known_latency_server import read_log, start_subprocess  # noqa: E402

LOCUSTFILE = "benchmarks/locustfiles/known_get.py"


def one_run(close: bool, rate: int, duration: int, work: Path) -> dict[str, float]:
    truth = work / "truth.csv"
    server, port = start_subprocess(["--latency-ms", "5", "--log", str(truth),
                                     *(["--close"] if close else [])])
    try:
        url = f"http://127.0.0.1:{port}"
        out = work / "runs"
        subprocess.run([sys.executable, "-m", "harness.cli", "run", LOCUSTFILE, "--target", url,
                        "--rate", str(rate), "--arrival", "constant", "--duration",
                        f"{duration}s", "--no-profile", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        server.terminate()
        server.wait(timeout=10)
    run = next(p for p in out.iterdir() if p.is_dir())
    overhead = json.loads((run / "load.json").read_text())["client_overhead"]
    summary = json.loads((run / "summary.json").read_text())
    split = summary["stages"]["*"]["residual_split"]
    client = summary["requests"][-1]["latency"]["client_uncorrected"]["p50_us"]
    service = statistics.median(int(r["service_us"]) for r in read_log(truth))
    return {"kept_p50": overhead["p50_us"], "kept_mean": overhead["mean_us"],
            "new_p50": overhead["new_connection"]["p50_us"],
            "new_mean": overhead["new_connection"]["mean_us"],
            "closed": split["closed_share"], "charged": split["loadgen_us"],
            "residual": summary["stages"]["*"]["residual"]["mean_us"],
            "gap_p50": client - service}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rate", type=int, default=50)
    p.add_argument("--duration", type=int, default=10)
    a = p.parse_args(argv)
    cols = ("kept_p50", "kept_mean", "new_p50", "new_mean", "closed", "charged", "residual",
            "gap_p50")
    print(f"{'round':<6} {'server':<10} " + " ".join(f"{c:>9}" for c in cols)
          + "   (µs; closed: share of responses)")
    for rnd in range(1, a.rounds + 1):
        for close in ((False, True) if rnd % 2 else (True, False)):
            with tempfile.TemporaryDirectory() as tmp:
                row = one_run(close, a.rate, a.duration, Path(tmp))
            print(f"{rnd:<6} {'close' if close else 'keep-alive':<10} "
                  + " ".join(f"{row[c]:>9.1f}" if c != "closed" else f"{row[c]:>9.2f}"
                             for c in cols), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
