"""Monitoring exports: rules checked and unit-tested by promtool, the Alertmanager config by
amtool, the Grafana dashboard against the metrics a running reference service exports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.analysis.slo import load_slo, parse_slo
from harness.exports.alertmanager import alertmanager_config, render_alertmanager
from harness.exports.grafana import dashboard, query_metrics, write_grafana
from harness.exports.prometheus_rules import prometheus_rules, render_rules, slo_targets

ROOT = Path(__file__).resolve().parent.parent
SLO = ROOT / "examples" / "slo.yaml"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool missing: make system-deps")
needs_amtool = pytest.mark.skipif(shutil.which("amtool") is None,
                                  reason="amtool missing: make system-deps")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def test_targets_from_the_example_slo() -> None:
    targets, skipped = slo_targets(load_slo(SLO))
    by_slo = {t.slo: t for t in targets}
    assert set(by_slo) == {"predict_fraud_p50", "predict_fraud_p99", "predict_fraud_errors",
                           "predict_fraud_infer_p99"}
    p99 = by_slo["predict_fraud_p99"]
    # 80 ms is not a bucket edge: the largest edge below it (75 ms) is used, stricter.
    assert p99.budget == pytest.approx(0.01) and 'le="0.075"' in p99.bad_expr
    assert 'stage="infer"' in by_slo["predict_fraud_infer_p99"].bad_expr
    assert 'le="0.04"' not in by_slo["predict_fraud_infer_p99"].bad_expr  # 40 ms -> 0.03
    assert 'le="0.03"' in by_slo["predict_fraud_infer_p99"].bad_expr
    assert by_slo["predict_fraud_errors"].budget == pytest.approx(0.01)
    assert any("min_throughput" in s for s in skipped)
    assert any("input_class=out_of_range" in s for s in skipped)
    with pytest.raises(ValueError, match="no objective"):
        prometheus_rules(parse_slo({"objectives": [{"name": "x", "input_class": "ood",
                                                    "latency": {"p99": "5ms"}}]}))


def test_burn_rate_alerts_follow_the_workbook() -> None:
    doc, _ = prometheus_rules(load_slo(SLO))
    alerts = {r["alert"]: r for r in doc["groups"][1]["rules"]}
    page = alerts["SLOBurn_predict_fraud_p99_1h"]
    assert page["labels"]["severity"] == "page"
    assert "rate1h" in page["expr"] and "rate5m" in page["expr"] and "> 0.144" in page["expr"]
    assert "> 0.06 " in alerts["SLOBurn_predict_fraud_p99_6h"]["expr"]
    ticket = alerts["SLOBurn_predict_fraud_p99_3d"]
    assert ticket["labels"]["severity"] == "ticket" and "rate6h" in ticket["expr"]
    # p50's budget (50 %) cannot burn 14.4x; it alerts when broken over both windows.
    assert "> 0.5 and" in alerts["SLOBurn_predict_fraud_p50_1h"]["expr"]
    assert "RefsvcDown" in alerts


@needs_promtool
def test_promtool_checks_and_unit_tests_the_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules(load_slo(SLO)))
    check = _promtool("check", "rules", str(rules))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 33 rules found" in check.stdout
    doc, _ = prometheus_rules(load_slo(SLO))
    page = next(r for r in doc["groups"][1]["rules"]
                if r["alert"] == "SLOBurn_predict_fraud_p99_1h")
    ann = {k: v.replace("{{ $value | humanizePercentage }}", "50%")
           for k, v in page["annotations"].items()}
    series = 'refsvc_request_duration_seconds_{}{{job="refsvc",model="fraud",version="v1"{}}}'
    tests = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [
        {"interval": "1m",
         # Half of 100 requests/min slower than 75 ms: 50 % bad against a 1 % budget.
         "input_series": [{"series": series.format("bucket", ',le="0.075"'),
                           "values": "0+50x90"},
                          {"series": series.format("count", ""), "values": "0+100x90"}],
         "alert_rule_test": [{"eval_time": "70m", "alertname": "SLOBurn_predict_fraud_p99_1h",
                              "exp_alerts": [{"exp_labels": page["labels"],
                                              "exp_annotations": ann}]}]},
        {"interval": "1m",
         # 0.5 % slow: inside the budget, nothing fires.
         "input_series": [{"series": series.format("bucket", ',le="0.075"'),
                           "values": "0+995x90"},
                          {"series": series.format("count", ""), "values": "0+1000x90"}],
         "alert_rule_test": [{"eval_time": "70m", "alertname": name, "exp_alerts": []}
                             for name in ("SLOBurn_predict_fraud_p99_1h",
                                          "SLOBurn_predict_fraud_p99_6h")]},
        {"interval": "1m",
         "input_series": [{"series": 'up{job="refsvc",instance="127.0.0.1:8000"}',
                           "values": "1 1 0 0 0 0"}],
         "alert_rule_test": [{"eval_time": "5m", "alertname": "RefsvcDown", "exp_alerts": [
             {"exp_labels": {"severity": "page", "job": "refsvc",
                             "instance": "127.0.0.1:8000"},
              "exp_annotations": {"summary": "the model service is not answering scrapes",
                                  "description": "127.0.0.1:8000 has been down for 1 "
                                                 "minute."}}]}]},
    ]}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    unit = _promtool("test", "rules", str(tmp_path / "tests.yml"))
    assert unit.returncode == 0, unit.stdout + unit.stderr


@needs_amtool
def test_alertmanager_config_is_valid_and_routes(tmp_path: Path) -> None:
    path = tmp_path / "am.yml"
    path.write_text(render_alertmanager())
    check = subprocess.run(["amtool", "check-config", str(path)], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "2 inhibit rules" in check.stdout
    for labels, receiver in ((["severity=page", "slo=predict_fraud_p99"], "page"),
                             (["severity=ticket"], "ticket"), (["alertname=Other"], "ticket")):
        route = subprocess.run(["amtool", "config", "routes", "test", "--config.file",
                                str(path), *labels], capture_output=True, text=True, timeout=30)
        assert route.stdout.strip() == receiver, (labels, route.stdout, route.stderr)
    inhibit = alertmanager_config()["inhibit_rules"][0]
    assert inhibit["source_matchers"] == ['alertname="RefsvcDown"']
    with pytest.raises(ValueError, match="page_url must be an http"):
        alertmanager_config(page_url="ftp://x")


def test_grafana_dashboard_structure(tmp_path: Path) -> None:
    written = write_grafana(tmp_path, "http://127.0.0.1:9090")
    dash = json.loads(written[0].read_text())
    assert dash["uid"] == "mlserve-refsvc" and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) == 8
    for p in dash["panels"]:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["targets"]
        assert all(t["expr"] and t["refId"] for t in p["targets"])
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    assert exprs.count("histogram_quantile(0.99") == 2
    ds = yaml.safe_load((tmp_path / "provisioning/datasources/mlserve.yaml").read_text())
    assert ds["datasources"][0]["url"] == "http://127.0.0.1:9090"
    prov = yaml.safe_load((tmp_path / "provisioning/dashboards/mlserve.yaml").read_text())
    assert Path(prov["providers"][0]["options"]["path"]) == (tmp_path / "dashboards").resolve()


@needs_promtool
def test_grafana_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses rule expressions: every panel query as a recording rule, with
    # Grafana's variables replaced by what Grafana would substitute.
    rules = [{"record": f"dashboard:q{i}", "expr": t["expr"].replace(
        "$__rate_interval", "1m").replace("$model", ".+")}
        for i, t in enumerate(t for p in dashboard()["panels"] for t in p["targets"])]
    path = tmp_path / "q.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]}))
    check = _promtool("check", "rules", str(path))
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.slow
def test_every_dashboard_metric_is_exported_by_the_service(reference_service, http,
                                                           tmp_path: Path) -> None:
    # A renamed upstream column, so that the missing-features counter has a series.
    faults = tmp_path / "faults.yaml"
    faults.write_text("feature_rename: {renames: {country: country_code}, models: [fraud]}\n")
    svc = reference_service(faults=str(faults))
    bodies = {"fraud": {"instances": [{"entity_id": 5, "features": {"amount": 12.5}}]},
              "churn": {"instances": [{"entity_id": 5}]},
              "ranking": {"instances": [{"entity_id": 5, "item_ids": [1, 2]}]}}
    for model, body in bodies.items():
        assert http("POST", f"{svc.url}/v1/models/{model}/predict", body).status == 200
    assert http("POST", f"{svc.url}/v1/models/fraud/predict", b"{").status == 400
    text = http("GET", f"{svc.url}/metrics").body.decode()
    from harness.rundir.scrapes import parse_exposition

    exported = set(parse_exposition(text))
    wanted = query_metrics(dashboard())
    # Rules read the same metrics: check them too.
    for target in slo_targets(load_slo(SLO))[0]:
        wanted |= query_metrics({"panels": [{"targets": [{"expr": target.bad_expr},
                                                          {"expr": target.total_expr}]}]})
    assert wanted and wanted <= exported, sorted(wanted - exported)


def test_export_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    assert main(["export", "prometheus-rules", str(SLO), "--out", str(tmp_path / "r.yml")]) == 0
    assert "skipped: objectives[0]" in capsys.readouterr().err
    assert yaml.safe_load((tmp_path / "r.yml").read_text())["groups"][0]["name"] == \
        "slo-recording"
    assert main(["export", "alertmanager", "--out", str(tmp_path / "am.yml")]) == 0
    assert main(["export", "grafana", "--out", str(tmp_path / "g")]) == 0
    assert (tmp_path / "g" / "dashboards" / "mlserve-refsvc.json").is_file()
    capsys.readouterr()
    # The installed entry point: bad input is one line on stderr and exit 2, no traceback.
    bad = subprocess.run([sys.executable, "-m", "harness.cli", "export", "prometheus-rules",
                          str(tmp_path / "missing.yaml")], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "cannot read the SLO file" in bad.stderr
    assert "Traceback" not in bad.stderr
