#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks use: redis-server (the second feature
# store), wrk (the efficiency ceiling in benchmarks), chromium (the report's browser test),
# prometheus and prometheus-alertmanager (monitoring exports and the local stack).
# Idempotent: does nothing when they are already on PATH.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
# prometheus + promtool (the local stack, rule checks), amtool (Alertmanager config check).
# The Debian packages ship services; in a container without systemd nothing starts them.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]}; install them with: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
