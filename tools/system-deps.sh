#!/usr/bin/env bash
# System packages CyNode needs on a Debian host. Idempotent; quiet when all are present.
set -euo pipefail
# zsh and fish: tests/cynork loads `cynork completion zsh|fish` into the real shells.
pkgs=(podman runc conmon containernetworking-plugins catatonit debootstrap tmux iproute2 curl nftables tcpdump zsh fish e2fsprogs)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: missing ${missing[*]}; run 'sudo make system-deps'" >&2; exit 1
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
