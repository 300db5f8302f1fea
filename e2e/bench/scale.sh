#!/usr/bin/env bash
# The operator at scale, beside Elastic's ECK on the same API server (issue 14, item 5).
#
# For each N in CLUSTERS: N one-node CassandraClusters on kwok's simulated nodes (pods exist,
# no container runs: pilots are absent, so every node reads "pilot unreachable"), then N
# one-node Elasticsearch objects under ECK, measured the same way, one operator at a time:
#   converge   seconds from the first apply until every cluster has a status for its generation
#   RSS        operator resident memory, idle, before and after SECRETS unrelated Secrets
#   CPU        operator CPU seconds over IDLE_SECONDS idle (printed per minute)
#   API req    the operator's own count of API requests (Stateward: stateward_api_requests_total;
#              ECK: client-go's rest_client_requests_total), per minute idle
#   p50/p99    reconcile wall time, from the operator's histogram, over a restart of the operator
#              (every cluster reconciled once, nothing to change)
#   p99 CPU    the same reconciles' CPU time (Stateward: stateward_reconcile_cpu_seconds, the CPU
#              time of its polls; ECK exports none: "-")
#   all CPU    p99 CPU time of every reconcile before the restart: creation, convergence, the
#              requeues while the pilots are absent, the idle window (same histogram)
#   pod->st    seconds from a pod's Ready condition turning False to the cluster's status showing
#              it (Stateward: status.nodes[].ready; ECK: status.availableNodes), median of PROBES
# Needs root and `cargo dev up`; builds kwok and ECK through the Go module proxy on first use.
# Leaves the cluster running and removes what it made.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTERS=${CLUSTERS:-"100 500"}
SECRETS=${SECRETS:-10000}
IDLE_SECONDS=${IDLE_SECONDS:-60}
PROBES=${PROBES:-5}
OPERATORS=${OPERATORS:-"stateward eck"}
work=${TMPDIR:-/tmp}/stateward-bench-scale
rm -rf "$work" && mkdir -p "$work"

cargo build --quiet --release -p stateward-e2e --bin dev -p stateward-operator --bin stateward-operator
dev=target/release/dev
KUBECONFIG=$("$dev" up 2>"$work/up.log") || { cat "$work/up.log" >&2; exit 1; }
export KUBECONFIG
kwok=$("$dev" tool kwok 2>>"$work/up.log")
eck=$("$dev" tool eck 2>>"$work/up.log")
kubectl=$("$dev" tool kubectl 2>>"$work/up.log")
k() { "$kubectl" "$@"; }
# kwok's stage files and ECK's CRDs, from the module cache the builds filled.
modules=$(GOTOOLCHAIN=go1.26.5 go env GOMODCACHE)
stage_dir=$modules/sigs.k8s.io/kwok@v0.8.0/kustomize/stage
eck_crds=$modules/github.com/elastic/cloud-on-k8s/v3@v3.5.0/config/crds/v1/all-crds.yaml

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  # Stopped mid-run: no operator is left to clear its finalizers.
  local r ns name
  for r in cassandraclusters.stateward.io:bench-stateward elasticsearches.elasticsearch.k8s.elastic.co:bench-eck; do
    ns=${r#*:}
    for name in $(k get "${r%%:*}" -n "$ns" -o name 2>/dev/null); do
      k patch "$name" -n "$ns" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    done
  done
  k delete namespace bench-stateward bench-stateward-system bench-eck bench-eck-system bench-noise \
    --ignore-not-found --wait=false >/dev/null 2>&1 || true
  k delete nodes -l stateward.io/bench=kwok --ignore-not-found >/dev/null 2>&1 || true
  k delete storageclass kwok-volume --ignore-not-found >/dev/null 2>&1 || true
  # ECK's CRDs go too: its short name `es` would shadow ours for everyone on this cluster.
  k delete -f "$eck_crds" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  ip route del unreachable 10.250.0.0/16 2>/dev/null || true
}
trap cleanup EXIT

# kwok: fake nodes (tainted, so nothing else lands there), pods Running at once, volumes bound
# by a StorageClass of its own. Its pod IPs are unreachable, so a pilot connection fails fast
# (as to a pod whose pilot is down) instead of waiting on a dropped SYN.
ip route replace unreachable 10.250.0.0/16
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
  pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml \
  volume/fast/pvc-provision.yaml volume/fast/pv-bind.yaml volume/fast/pv-delete.yaml \
  volume/fast/pvc-delete.yaml; do
  echo "---"
  cat "$stage_dir/$f"
done >"$work/kwok-stages.yaml"
"$kwok" --kubeconfig "$KUBECONFIG" --config "$work/kwok-stages.yaml" \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --cidr 10.250.0.0/16 --node-ip 10.250.255.254 --node-lease-duration-seconds 40 >"$work/kwok.log" 2>&1 &
pids+=($!)
k apply -f - >/dev/null <<'EOF'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: kwok-volume
provisioner: kwok.x-k8s.io/volume
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
fake_nodes() { # enough for N pods at kwok's 110 pods per node
  local n=$(($1 / 100 + 1)) i
  for i in $(seq 0 $((n - 1))); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-bench-$i
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {stateward.io/bench: kwok, type: kwok, kubernetes.io/hostname: kwok-bench-$i}
spec:
  taints: [{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]
EOF
  done
}
placement='nodeSelector: {type: kwok}
        tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]'

k apply --server-side --force-conflicts -f crds/ >/dev/null
k apply --server-side --force-conflicts -f "$eck_crds" >/dev/null

cassandra_clusters() {
  local i
  for i in $(seq 1 "$1"); do
    cat <<EOF
---
apiVersion: stateward.io/v1alpha1
kind: CassandraCluster
metadata: {name: c$i, namespace: bench-stateward}
spec:
  version: "5.0.9"
  replicas: 1
  nodePools:
    - name: main
      storage: {size: 1Gi, storageClassName: kwok-volume}
      ${placement//        /      }
EOF
  done
}
eck_clusters() {
  local i
  for i in $(seq 1 "$1"); do
    cat <<EOF
---
apiVersion: elasticsearch.k8s.elastic.co/v1
kind: Elasticsearch
metadata: {name: e$i, namespace: bench-eck}
spec:
  version: 9.2.0
  nodeSets:
    - name: main
      count: 1
      podTemplate:
        spec:
          $(echo "${placement}" | sed '2s/^ */          /')
      volumeClaimTemplates:
        - metadata: {name: elasticsearch-data}
          spec:
            accessModes: [ReadWriteOnce]
            storageClassName: kwok-volume
            resources: {requests: {storage: 1Gi}}
EOF
  done
}
noise_secrets() {
  local i
  for i in $(seq 1 "$1"); do
    printf -- '---\napiVersion: v1\nkind: Secret\nmetadata: {name: s%d, namespace: bench-noise}\nstringData: {key: "%0128d"}\n' "$i" "$i"
  done
}

rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
cpu_seconds() { # utime + stime of the process, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}
# Sum of a counter family in a Prometheus/OpenMetrics scrape.
metric_sum() { curl -fsS "$1" | awk -v m="$2" '$1 ~ "^"m"(\\{|$)" {s += $NF} END {printf "%d", s}'; }
# histogram_quantile over the summed buckets of one histogram (label filter as a regex), in the
# scrape file $1.
quantile() { # $1 scrape file, $2 histogram, $3 label filter, $4 quantile
  awk -v m="$2_bucket" -v f="$3" '
    index($1, m"{") == 1 && $1 ~ f {
      match($1, /le="[^"]+"/); le = substr($1, RSTART + 4, RLENGTH - 5)
      if (le == "+Inf") le = 1e12
      sum[le + 0] += $NF
    }
    END { for (le in sum) print le, sum[le] }' "$1" | sort -g | awk -v q="$4" '
    { le[NR] = $1; c[NR] = $2 }
    END {
      total = c[NR]
      if (NR == 0 || total == 0) { print "-"; exit }
      prev_le = 0; prev = 0
      for (i = 1; i <= NR; i++) {
        if (c[i] >= q * total) {
          if (le[i] == 1e12) { printf ">%gms", prev_le * 1000; exit }
          printf "%.2fms", (prev_le + (le[i] - prev_le) * (q * total - prev) / (c[i] - prev)) * 1000
          exit
        }
        prev_le = le[i]; prev = c[i]
      }
    }'
}

start_operator() { # $1 = stateward|eck; sets op_pid and metrics
  local port=18480; [ "$1" = eck ] && port=18481
  if curl -fsS -o /dev/null "http://127.0.0.1:$port/metrics" 2>/dev/null; then
    echo "127.0.0.1:$port is already served (an operator left from an earlier run?)" >&2
    exit 1
  fi
  case $1 in
    stateward)
      STATEWARD_WATCH_NAMESPACE=bench-stateward STATEWARD_CREDENTIALS_NAMESPACE=bench-stateward-system \
        STATEWARD_METRICS_ADDR=127.0.0.1:18480 STATEWARD_LEADER_ELECTION=false RUST_LOG=warn \
        STATEWARD_CASSANDRA_IMAGE_REPOSITORY=stateward.local/cassandra \
        target/release/stateward-operator run >>"$work/stateward.log" 2>&1 &
      metrics=http://127.0.0.1:18480/metrics ;;
    eck)
      "$eck" manager --namespaces=bench-eck --operator-namespace=bench-eck-system \
        --enable-webhook=false --manage-webhook-certs=false --disable-telemetry \
        --metrics-port=18481 --metrics-host=127.0.0.1 --log-verbosity=-1 >>"$work/eck.log" 2>&1 &
      metrics=http://127.0.0.1:18481/metrics ;;
  esac
  op_pid=$!
  pids+=("$op_pid")
  for _ in $(seq 100); do curl -fsS -o /dev/null "$metrics" 2>/dev/null && return; sleep 0.2; done
  echo "the $1 operator did not serve $metrics; see $work/$1.log" >&2
  exit 1
}
stop_operator() { # SIGTERM, as a pod is stopped; SIGKILL after 30 s (and say so)
  kill "$op_pid"
  for _ in $(seq 300); do kill -0 "$op_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$op_pid" 2>/dev/null; then
    echo "operator $op_pid still running 30 s after SIGTERM: killed" >&2
    kill -9 "$op_pid"
  fi
  wait "$op_pid" 2>/dev/null || true
}

# Every cluster has a status for its current generation (ECK: observedGeneration too).
converged() { # $1 = resource, $2 = namespace, $3 = N
  local done
  done=$(k get "$1" -n "$2" -o jsonpath='{range .items[*]}{.metadata.generation}={.status.observedGeneration}{"\n"}{end}' |
    awk -F= '$1 == $2 && $2 != "" {n++} END {print n + 0}')
  [ "$done" -ge "$3" ]
}
wait_converged() { # $1 resource, $2 namespace, $3 N; prints seconds
  local start; start=$(date +%s.%N)
  for _ in $(seq 1800); do converged "$1" "$2" "$3" && break; sleep 1; done
  converged "$1" "$2" "$3" || { echo "$1 in $2 did not converge" >&2; exit 1; }
  echo "$(date +%s.%N) - $start" | bc
}

# Seconds from a pod's Ready=False to the status showing it, for cluster $2 of kind $1.
status_shows() { # $1 kind, $2 name, $3 namespace
  case $1 in
    stateward) k get cassandracluster "$2" -n "$3" -o jsonpath='{.status.nodes[0].ready}' ;;
    eck) k get elasticsearch "$2" -n "$3" -o jsonpath='{.status.availableNodes}' ;;
  esac
}
pod_to_status() { # $1 kind, $2 cluster name, $3 namespace, $4 pod; prints seconds
  local before t0 now
  before=$(status_shows "$1" "$2" "$3")
  t0=$(date +%s.%N)
  k patch pod "$4" -n "$3" --subresource=status --type=strategic -p \
    '{"status":{"conditions":[{"type":"Ready","status":"False"},{"type":"ContainersReady","status":"False"}]}}' >/dev/null
  for _ in $(seq 600); do
    now=$(status_shows "$1" "$2" "$3")
    if [ "$now" != "$before" ]; then printf '%.2f' "$(echo "$(date +%s.%N) - $t0" | bc)"; return; fi
    sleep 0.05
  done
  echo "timeout"
}

# The median of PROBES latencies; "timeout" if any probe timed out.
median() {
  if printf '%s\n' "$@" | grep -qx timeout; then echo timeout; return; fi
  printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'
}

# After a restart: wait until the operator has reconciled every cluster once.
wait_reconciled() { # $1 histogram, $2 label filter, $3 N
  local got
  for _ in $(seq 1200); do
    got=$(curl -fsS "$metrics" | awk -v m="$1_count" -v f="$2" \
      'index($1, m"{") == 1 && $1 ~ f {s += $NF} END {print s + 0}')
    [ "${got%.*}" -ge "$3" ] && return
    sleep 0.5
  done
  echo "the operator did not reconcile $3 clusters after a restart" >&2
  exit 1
}

measure() { # $1 operator, $2 N: prints one table row
  local op=$1 n=$2 ns res objects prefix pod_suffix counter hist cpu_hist filter
  local conv rss0 rss1 c0 c1 r0 r1 lat p50 p99 cpu99=- all99=- i
  case $op in
    stateward) ns=bench-stateward res=cassandraclusters objects=cassandra_clusters prefix=c
      pod_suffix=-main-0 counter=stateward_api_requests_total
      hist=stateward_reconcile_duration_seconds filter='kind="CassandraCluster"'
      cpu_hist=stateward_reconcile_cpu_seconds ;;
    eck) ns=bench-eck res=elasticsearches objects=eck_clusters prefix=e
      pod_suffix=-es-main-0 counter=rest_client_requests_total
      hist=controller_runtime_reconcile_time_seconds filter='controller="elasticsearch-controller"'
      cpu_hist= ;;
  esac
  k create namespace "$ns" >/dev/null
  k create namespace "$ns-system" >/dev/null
  start_operator "$op"
  "$objects" "$n" >"$work/$op-$n.yaml"
  conv=$(k apply -f "$work/$op-$n.yaml" >/dev/null && wait_converged "$res" "$ns" "$n")
  k wait pods -n "$ns" --all --for=condition=Ready --timeout=600s >/dev/null
  sleep "${SETTLE_SECONDS:-10}" # let the first wave of requeues pass before the idle window
  rss0=$(rss_mib "$op_pid")
  c0=$(cpu_seconds "$op_pid"); r0=$(metric_sum "$metrics" "$counter")
  sleep "$IDLE_SECONDS"
  c1=$(cpu_seconds "$op_pid"); r1=$(metric_sum "$metrics" "$counter")
  curl -fsS "$metrics" >"$work/$op-$n-idle.metrics" # kept for a closer look
  [ -n "$cpu_hist" ] && all99=$(quantile "$work/$op-$n-idle.metrics" "$cpu_hist" "$filter" 0.99)
  noise_secrets "$SECRETS" | k apply -f - >/dev/null
  sleep 10
  rss1=$(rss_mib "$op_pid")
  lat=()
  for i in $(seq 1 "$PROBES"); do
    lat+=("$(pod_to_status "$op" "$prefix$i" "$ns" "$prefix$i$pod_suffix")")
  done
  stop_operator
  start_operator "$op"
  wait_reconciled "$hist" "$filter" "$n"
  curl -fsS "$metrics" >"$work/$op-$n-restart.metrics"
  p50=$(quantile "$work/$op-$n-restart.metrics" "$hist" "$filter" 0.5)
  p99=$(quantile "$work/$op-$n-restart.metrics" "$hist" "$filter" 0.99)
  [ -n "$cpu_hist" ] && cpu99=$(quantile "$work/$op-$n-restart.metrics" "$cpu_hist" "$filter" 0.99)
  # Deleted while the operator runs, which owns their finalizers.
  k delete "$res" -n "$ns" --all --wait=true --timeout=600s >/dev/null
  stop_operator
  printf '%-9s %5d %9.1f %8s %8s %8.2f %8.0f %9s %9s %9s %9s %8s\n' "$op" "$n" "$conv" "$rss0" "$rss1" \
    "$(echo "($c1 - $c0) * 60 / $IDLE_SECONDS" | bc -l)" \
    "$(echo "($r1 - $r0) * 60 / $IDLE_SECONDS" | bc -l)" "$p50" "$p99" "$cpu99" "$all99" "$(median "${lat[@]}")"
  k delete namespace "$ns" "$ns-system" bench-noise --wait=true --timeout=600s >/dev/null
  k create namespace bench-noise >/dev/null
}

for ns in bench-stateward bench-stateward-system bench-eck bench-eck-system bench-noise; do
  k wait --for=delete "namespace/$ns" --timeout=600s >/dev/null 2>&1 || true
done
k create namespace bench-noise >/dev/null
printf '%-9s %5s %9s %8s %8s %8s %8s %9s %9s %9s %9s %8s\n' operator N "converge" "RSS MiB" "+secrets" \
  "CPU s/m" "API r/m" "p50" "p99" "p99 CPU" "all CPU" "pod->st"
for n in $CLUSTERS; do
  fake_nodes "$n" | k apply -f - >/dev/null
  for op in $OPERATORS; do measure "$op" "$n"; done
done
