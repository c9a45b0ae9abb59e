"""A local Prometheus (Debian's ``prometheus`` binary) scraping a service on 127.0.0.1.

``PrometheusStack(target, ...)`` writes a generated ``prometheus.yml`` (job ``refsvc``, the
job name the exported rules select on) and, given an SLO file, the rule file of
``harness export prometheus-rules`` into a work directory, starts ``prometheus`` bound to
127.0.0.1 on a free port with its TSDB in that directory, waits until it is ready, and
answers PromQL through the HTTP API (``query``). ``stop()`` ends it and removes nothing
the caller gave. Used by ``scripts/prometheus_stack.py`` and the tests.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from harness.analysis.slo import load_slo
from harness.exports.prometheus_rules import JOB, render_rules

__all__ = ["PrometheusStack", "StackError", "prometheus_config"]


class StackError(RuntimeError):
    """Prometheus could not be started or queried; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prometheus_config(target: str, scrape_interval_s: float = 1.0,
                      rule_files: list[str] | None = None) -> dict[str, Any]:
    """``prometheus.yml`` scraping ``target`` (``host:port``) as job ``refsvc``."""
    if ":" not in target or "/" in target:
        raise ValueError(f"target must be host:port (got {target!r})")
    if not 0.1 <= scrape_interval_s <= 300:
        raise ValueError(f"scrape_interval_s must be in [0.1, 300] (got {scrape_interval_s!r})")
    interval = f"{int(scrape_interval_s * 1000)}ms"
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": list(rule_files or []),
            "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                                "static_configs": [{"targets": [target]}]}]}


class PrometheusStack:
    """One private Prometheus process; use as a context manager or call start/stop."""

    def __init__(self, target: str, *, slo: str | Path | None = None,
                 scrape_interval_s: float = 1.0, port: int | None = None,
                 work_dir: str | Path | None = None, binary: str = "prometheus") -> None:
        exe = shutil.which(binary)
        if exe is None:
            raise StackError(f"{binary!r} is not on PATH (install Debian's prometheus: "
                             "scripts/install-system-deps.sh)")
        self.binary = exe
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="mlserve-prom-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        rules: list[str] = []
        if slo is not None:
            rule_path = self.work_dir / "slo-rules.yml"
            rule_path.write_text(render_rules(load_slo(slo)))
            rules.append(str(rule_path))
        self.config_path = self.work_dir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(
            prometheus_config(target, scrape_interval_s, rules), sort_keys=False))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> PrometheusStack:
        log = open(self.work_dir / "prometheus.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={self.config_path}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             f"--storage.tsdb.path={self.work_dir / 'tsdb'}"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StackError(f"prometheus exited with code {self.process.returncode}: "
                                 f"{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:  # noqa: S310
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise StackError(f"prometheus was not ready after {timeout_s} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            lines = (self.work_dir / "prometheus.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:])

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query: the ``result`` list of the API's vector answer."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - local http
                doc = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raise StackError(f"query {promql!r} failed: HTTP {exc.code} "
                             f"{exc.read()[:200]!r}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise StackError(f"query {promql!r} failed: {exc}") from exc
        if doc.get("status") != "success":
            raise StackError(f"query {promql!r} failed: {doc}")
        return list(doc["data"]["result"])

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as r:  # noqa: S310
            return json.loads(r.read())["data"]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> PrometheusStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
