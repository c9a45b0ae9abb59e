#!/usr/bin/env bash
# Run the test suite on a busy machine, as CI often is: one CPU-burning process per core
# (pinned to it when taskset is there) runs for as long as pytest does.
#
#   scripts/stress-test-suite.sh                              # the whole suite (make test)
#   scripts/stress-test-suite.sh tests/test_profile_collector.py -k window
#   scripts/stress-test-suite.sh -m "not slow"                # the fast suite
#   STRESS_BURNERS=4 scripts/stress-test-suite.sh ...         # more (or fewer) burners
#
# Every argument goes to pytest. The burners are ordinary busy loops at the tests' own
# priority, so the tests get about half of each core. They are killed when the script
# exits, however it exits (pytest failing, Ctrl-C, SIGTERM: a trap), and each one also
# ends by itself within a fraction of a second once this script's process is gone (so
# not even a SIGKILL of the script leaves them running). Exit status: pytest's.
set -u

cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [ ! -x "$PY" ]; then
    echo "stress-test-suite: $PY not found: run make venv first (or set PYTHON)" >&2
    exit 2
fi
CORES=$(nproc)
BURNERS=${STRESS_BURNERS:-$CORES}
case $BURNERS in
    ''|*[!0-9]*) echo "stress-test-suite: STRESS_BURNERS must be a whole number (got '$BURNERS')" >&2
                 exit 2 ;;
esac

pids=()
cleanup() {
    trap - EXIT INT TERM HUP
    if [ ${#pids[@]} -gt 0 ]; then
        kill "${pids[@]}" 2>/dev/null
        wait "${pids[@]}" 2>/dev/null
    fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 129' HUP

# Spin, and look every 10k iterations (~20 ms on a quiet core) whether the script is there.
BURN='while kill -0 "$1" 2>/dev/null; do for ((j = 0; j < 10000; j++)); do :; done; done'
for ((i = 0; i < BURNERS; i++)); do
    if command -v taskset >/dev/null; then
        taskset -c $((i % CORES)) bash -c "$BURN" burner $$ &
    else
        bash -c "$BURN" burner $$ &
    fi
    pids+=($!)
done
echo "stress-test-suite: $BURNERS busy loops on $CORES cores (pids ${pids[*]}); load $(cut -d' ' -f1-3 /proc/loadavg)"

start=$(date +%s)
"$PY" -m pytest -q "$@"
status=$?
echo "stress-test-suite: pytest exited $status after $(( $(date +%s) - start )) s with $BURNERS busy loops; load $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
