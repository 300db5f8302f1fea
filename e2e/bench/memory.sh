#!/usr/bin/env bash
# Prints the resident memory of Stateward's processes on the local cluster (run `cargo dev demo`
# first): the operator, every pilot by database, and the database processes beside them for
# scale. Pods of the single-node cluster are processes of this machine, so /proc has them all.
# Samples SAMPLES times, SECONDS_APART apart, and prints min/max per process kind. Needs root.
set -euo pipefail
samples=${SAMPLES:-5}
apart=${SECONDS_APART:-3}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }

declare -A min max count
for _ in $(seq "$samples"); do
  while read -r pid cmd; do
    case "$cmd" in
      *"stateward-operator run"*) kind=operator ;;
      *"stateward-pilot cassandra"*) kind="pilot (cassandra)" ;;
      *"stateward-pilot elasticsearch"*) kind="pilot (elasticsearch)" ;;
      *org.apache.cassandra.service.CassandraDaemon*) kind="cassandra jvm" ;;
      *org.elasticsearch.bootstrap.Elasticsearch*) kind="elasticsearch jvm" ;;
      *) continue ;;
    esac
    kib=$(rss_kib "$pid")
    [ -n "$kib" ] || continue
    count[$kind]=$(( ${count[$kind]:-0} + 1 ))
    if [ -z "${min[$kind]:-}" ] || [ "$kib" -lt "${min[$kind]}" ]; then min[$kind]=$kib; fi
    if [ -z "${max[$kind]:-}" ] || [ "$kib" -gt "${max[$kind]}" ]; then max[$kind]=$kib; fi
  done < <(ps -eo pid=,args=)
  sleep "$apart"
done

printf '%-24s %10s %12s %12s\n' process samples "min MiB" "max MiB"
for kind in operator "pilot (cassandra)" "pilot (elasticsearch)" "cassandra jvm" "elasticsearch jvm"; do
  [ -n "${count[$kind]:-}" ] || { printf '%-24s %10s\n' "$kind" "absent"; continue; }
  awk -v k="$kind" -v n="${count[$kind]}" -v lo="${min[$kind]}" -v hi="${max[$kind]}" \
    'BEGIN { printf "%-24s %10d %12.1f %12.1f\n", k, n, lo / 1024, hi / 1024 }'
done
