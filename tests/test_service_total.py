"""The service's total among Server-Timing entries, whatever its name: inferred from the
values (harness/load/servicetotal.py), by hand on constructed requests and end to end
against a server whose stages and total are known."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.load.servicetotal import ServiceTotal, infer_total

ROOT = Path(__file__).resolve().parent.parent


def _sibling_plus_total(n: int = 50) -> list[tuple[dict[str, int], int]]:
    # db, model, encode inside the handler, total = handler (+0.3 ms of framework); the
    # client sees total + 0.2 ms: entries sum to ~2x the client time
    out = []
    for i in range(n):
        db, model, enc = 1000 + 37 * (i % 7), 3000 + 11 * (i % 5), 200
        total = db + model + enc + 300
        out.append(({"db": db, "model": model, "encode": enc, "total": total}, total + 200))
    return out


def test_a_total_beside_its_stages_is_inferred() -> None:
    name, how, ev = infer_total(_sibling_plus_total())
    assert name == "total" and how.startswith("inferred: 'total' covers the other entries")
    assert ev["covers_share"] == 1.0 and ev["sum_above_client"] == 50


def test_nested_entries_take_the_covering_one() -> None:
    # handler holds db; no separate total: handler is the service's time
    samples = [({"handler": 5000 + i, "db": 2000 + i}, 5600 + i) for i in range(50)]
    assert infer_total(samples)[0] == "handler"


def test_siblings_are_summed() -> None:
    # fetch, infer, serialize; infer is usually largest but fetch sometimes runs long
    samples = [({"fetch": 900 if i % 10 else 9000, "infer": 6000, "serialize": 300},
                7500 if i % 10 else 16000) for i in range(50)]
    name, how, _ = infer_total(samples)
    assert name is None and "none covers the others" in how


def test_a_dominant_sibling_is_not_taken_for_a_total() -> None:
    # infer always larger than fetch + serialize, but most of it unexplained by them and
    # the entries never sum above the client time (queueing in front): siblings
    samples = [({"fetch": 500, "infer": 8000, "serialize": 200}, 30_000) for _ in range(50)]
    name, how, ev = infer_total(samples)
    assert name is None and "--service-total infer" in how
    assert ev["median_excess_share"] == pytest.approx(7300 / 8000, abs=1e-4)


def test_residuals_wait_for_the_decision_then_all_are_recorded() -> None:
    got: list[int] = []
    total = ServiceTotal(decide_after=50)
    for stages, client in _sibling_plus_total(49):
        total.residual(stages, client, lambda t, c=client: got.append(c - t))
    assert got == [] and not total.decided
    stages, client = _sibling_plus_total(1)[0]
    total.residual(stages, client, lambda t: got.append(client - t))
    assert total.decided and len(got) == 50 and set(got) == {200}
    total.residual({"db": 1, "model": 2, "encode": 3}, 10, got.append)  # no total entry
    assert got[-1] == 6 and total.report()["total_missing"] == 1


def test_given_name_and_single_entries() -> None:
    given = ServiceTotal("handler")
    out: list[int] = []
    given.residual({"handler": 10, "db": 4}, 12, out.append)
    assert out == [10] and given.report()["how"] == "given (--service-total)"
    single = ServiceTotal(decide_after=3)
    for _ in range(3):
        single.residual({"app": 7}, 9, out.append)
    assert out[-3:] == [7, 7, 7] and single.name is None
    early = ServiceTotal(decide_after=50)
    early.residual({"a": 4, "b": 5}, 6, out.append)  # sum 9 > client 6: b is the total
    early.flush()  # the load ended first: decide with what there is
    assert early.decided and out[-1] == 5


def _run_known(tmp_path: Path, *server_args: str) -> Path:
    server = subprocess.Popen([sys.executable, "tests/known_latency_server.py", "--port", "0",
                               "--print-port", "--latency-ms", "4", "--lognormal-sigma", "0.3",
                               *server_args], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        res = subprocess.run([sys.executable, "-m", "harness.cli", "run",
                              "tests/locustfiles/plain_post.py", "--target", url, "--users", "4",
                              "--duration", "4s", "--no-profile", "--out", str(tmp_path)],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    return next(tmp_path.iterdir())


@pytest.mark.slow
def test_a_server_naming_its_total_total_gives_a_complete_run(tmp_path: Path) -> None:
    run = _run_known(tmp_path, "--stages", "db,model,encode", "--split", "0.2,0.7,0.1",
                     "--total-name", "total")
    summary = json.loads((run / "summary.json").read_text())
    load = json.loads((run / "load.json").read_text())
    assert load["negative_residuals"] == 0 and load["service_total"]["name"] == "total"
    overall = summary["stages"]["*"]
    assert overall["service_total"] == "total"
    assert overall["service_total_how"].startswith("inferred: 'total'")
    assert overall["residual"]["mean_us"] >= 0
    text = subprocess.run([sys.executable, "-m", "harness.cli", "summary", str(run)],
                          capture_output=True, text=True, cwd=ROOT).stdout
    assert "total (service total)" in text and "service total 'total': inferred" in text


@pytest.mark.slow
def test_stages_only_are_summed_and_a_given_total_wins(tmp_path: Path) -> None:
    run = _run_known(tmp_path / "a", "--stages", "fetch,infer", "--total-name", "")
    overall = json.loads((run / "summary.json").read_text())["stages"]["*"]
    assert overall["service_total"] == "sum"
    assert json.loads((run / "load.json").read_text())["negative_residuals"] == 0
