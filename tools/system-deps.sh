#!/usr/bin/env bash
# System packages CyNode needs on a Debian host. Idempotent; quiet when all are present.
set -euo pipefail
# zsh and fish: tests/cynork loads `cynork completion zsh|fish` into the real shells.
pkgs=(podman runc conmon containernetworking-plugins catatonit debootstrap tmux iproute2 curl nftables tcpdump zsh fish e2fsprogs)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
# sandbox.userns auto (the default): Podman takes each sandbox's user namespace from the
# `containers` user's subordinate ids; one range above every normal uid, added once.
subid_missing=()
for f in /etc/subuid /etc/subgid; do grep -q '^containers:' "$f" 2>/dev/null || subid_missing+=("$f"); done
[ ${#missing[@]} -eq 0 ] && [ ${#subid_missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: missing ${missing[*]} ${subid_missing[*]}; run 'sudo make system-deps'" >&2; exit 1
fi
for f in "${subid_missing[@]}"; do
  echo "system-deps: adding containers:2147483647:2147483648 to $f"
  echo "containers:2147483647:2147483648" >> "$f"
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
