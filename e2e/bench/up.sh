#!/usr/bin/env bash
# Measures `cargo dev up`: cold (state purged, build caches kept), warm (after a plain
# `down`: images, certificates and etcd data kept), reuse (already running), and the total
# resident memory of everything the cluster runs (daemons, containerd shims, pod processes).
# Needs root. Leaves the cluster running.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --quiet --release -p stateward-e2e --bin dev
dev=target/release/dev
run_dir=${STATEWARD_CACHE_DIR:-$HOME/.cache/stateward}/run

secs() { date +%s.%N; }
timed_up() {
  local t0 t1
  t0=$(secs)
  "$dev" up >/dev/null 2>"${TMPDIR:-/tmp}/stateward-bench-up.log" || {
    cat "${TMPDIR:-/tmp}/stateward-bench-up.log" >&2
    exit 1
  }
  t1=$(secs)
  echo "$t1 - $t0" | bc
}

"$dev" down --purge
cold=$(timed_up)
"$dev" down
warm=$(timed_up)
reuse=$(timed_up)

# Resident memory: our daemons (PID files), shims serving our containerd, pod processes.
pids=()
for f in "$run_dir"/pids/*.pid; do pids+=("$(cut -d' ' -f1 "$f")"); done
sock="$run_dir/containerd/containerd.sock"
for p in /proc/[0-9]*; do
  if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "containerd-shim-runc-v2 .*$sock"; then
    pids+=("${p#/proc/}")
  fi
done
while read -r f; do
  while read -r p; do pids+=("$p"); done <"$f"
done < <(find /sys/fs/cgroup/pids/kubepods -name cgroup.procs 2>/dev/null)
total_kb=0
for p in $(printf '%s\n' "${pids[@]}" | sort -un); do
  kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
  total_kb=$((total_kb + ${kb:-0}))
done

printf 'cold up (purged state): %6.1f s\n' "$cold"
printf 'warm up (after down):   %6.1f s\n' "$warm"
printf 'up when running:        %6.1f s\n' "$reuse"
printf 'total RSS:              %6.0f MiB (%d processes)\n' "$((total_kb / 1024))" \
  "$(printf '%s\n' "${pids[@]}" | sort -un | wc -l)"
