#!/usr/bin/env bash
# Installs the Debian packages the local cluster harness (`cargo dev`) needs.
# Idempotent: exits at once when everything is present; runs `apt-get update` only when a
# package is missing. Go (>= 1.21, which fetches the pinned toolchain itself) and Rust are
# expected from the machine image.
set -euo pipefail

# command-or-file -> Debian package
checks=(
  "containerd:containerd"
  "runc:runc"
  "ctr:containerd"
  "/usr/lib/cni/bridge:containernetworking-plugins"
  "umoci:umoci"
  "skopeo:skopeo"
  "debootstrap:debootstrap"
  "nft:nftables"
  "iptables:iptables"
  "conntrack:conntrack"
  "socat:socat"
  "ethtool:ethtool"
  "ip:iproute2"
  "openssl:openssl"
  "gcc:gcc"
  "/usr/lib/x86_64-linux-gnu/libc.a:libc6-dev"
  "/etc/ssl/certs/ca-certificates.crt:ca-certificates"
  "mount:mount"
)

missing=()
for entry in "${checks[@]}"; do
  what=${entry%%:*}
  pkg=${entry#*:}
  if [[ $what == /* ]]; then
    [[ -e $what ]] && continue
  else
    PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" command -v "$what" >/dev/null 2>&1 && continue
  fi
  missing+=("$pkg")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]}; run this script as root" >&2
    exit 1
  fi
  # Deduplicate (containerd provides two commands).
  mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "installing: ${pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
fi

if ! command -v go >/dev/null 2>&1 && [[ ! -x /usr/local/go/bin/go ]]; then
  echo "Go is not installed: install Go >= 1.21 (it downloads the pinned go1.26.x toolchain" \
    "through the module proxy), e.g. under /usr/local/go" >&2
  exit 1
fi
