#!/usr/bin/env bash
# How soon a node's failure shows in its cluster's status (issue 14's goal: within 0.5 s of a
# crash, 2 s of a hang), on the demo (`cargo dev demo`), with real databases and pilots.
#
# For each signal in SIGNALS, PROBES times: wait until POD is ready in the status, send the
# signal to its database process (found on this host by the pod's cgroup), and time the first
# status that shows the node not ready. KILL is a crash (the container restarts); STOP is a
# hang (the process is continued afterwards). Prints one row per signal: median and worst.
#
#   bash e2e/bench/failure.sh                       # the demo's Cassandra, node demo-main-2
#   KIND=esc NAME=search POD=search-main-2 PROCESS=org.elasticsearch.bootstrap.Elasticsearch \
#     bash e2e/bench/failure.sh                     # the demo's Elasticsearch
# Needs root on the machine that runs the node (it signals the process directly).
set -euo pipefail
cd "$(dirname "$0")/../.."

KIND=${KIND:-cassandracluster}
NAME=${NAME:-demo}
NAMESPACE=${NAMESPACE:-default}
POD=${POD:-demo-main-2}
PROCESS=${PROCESS:-org.apache.cassandra.service.CassandraDaemon}
SIGNALS=${SIGNALS:-"STOP KILL"}
PROBES=${PROBES:-3}
work=${TMPDIR:-/tmp}/stateward-bench-failure
rm -rf "$work" && mkdir -p "$work"

cargo build --quiet --release -p stateward-e2e --bin dev
KUBECONFIG=$(target/release/dev kubeconfig)
export KUBECONFIG
kubectl=$(target/release/dev tool kubectl 2>"$work/tool.log")
k() { "$kubectl" "$@"; }
node_ready="{.status.nodes[?(@.name==\"$POD\")].ready}"

watcher=
stop_watch() { [ -n "$watcher" ] && kill "$watcher" 2>/dev/null; watcher=; }
cleanup() {
  stop_watch
  # A stopped process left stopped would hang the node for good.
  [ -n "${pid:-}" ] && kill -CONT "$pid" 2>/dev/null || true
}
trap cleanup EXIT

# The database process of the pod: the one whose cgroup is the pod's.
database_pid() {
  local uid p
  uid=$(k get pod "$POD" -n "$NAMESPACE" -o jsonpath='{.metadata.uid}')
  for p in $(pgrep -f "$PROCESS"); do
    if grep -q "pod$uid" "/proc/$p/cgroup" 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  echo "no $PROCESS process in pod $POD" >&2
  return 1
}

# Seconds from the signal to the first status showing the node not ready.
# Runs in a subshell (its output is captured), which does not inherit the EXIT trap: set its own,
# so that a stopped process is continued however the probe ends.
probe() {
  local signal=$1 log=$work/watch-$1-$2.log t0 line at deadline
  trap cleanup EXIT
  k wait "$KIND/$NAME" -n "$NAMESPACE" --for=jsonpath="$node_ready"=true --timeout=600s >/dev/null
  pid=$(database_pid)
  # Every status change, stamped on arrival; the first line is the current status.
  # (Its stderr says the watch was cancelled when it is stopped.)
  k get "$KIND" "$NAME" -n "$NAMESPACE" -o jsonpath="$node_ready{\"\\n\"}" --watch 2>/dev/null |
    while IFS= read -r line; do echo "$EPOCHREALTIME $line"; done >"$log" &
  watcher=$!
  until [ -s "$log" ]; do sleep 0.05; done
  t0=$EPOCHREALTIME
  kill "-$signal" "$pid"
  deadline=$((SECONDS + 60))
  while :; do
    at=$(awk -v t0="$t0" '$1 > t0 && $2 != "true" { print $1; exit }' "$log")
    [ -n "$at" ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "the status did not show $POD not ready within 60 s of SIG$signal" >&2
      exit 1
    fi
    sleep 0.02
  done
  stop_watch
  [ "$signal" = STOP ] && kill -CONT "$pid"
  pid=
  awk -v a="$at" -v b="$t0" 'BEGIN { printf "%.2f\n", a - b }'
}

printf '%-8s %7s %8s %8s  %s\n' signal probes median worst each
for signal in $SIGNALS; do
  times=()
  for i in $(seq "$PROBES"); do
    took=$(probe "$signal" "$i") # a failed probe stops the run (set -e)
    times+=("$took")
  done
  sorted=$(printf '%s\n' "${times[@]}" | sort -n)
  median=$(echo "$sorted" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  worst=$(echo "$sorted" | tail -1)
  printf '%-8s %7s %8s %8s  %s\n' "$signal" "$PROBES" "$median" "$worst" "${times[*]}"
done
