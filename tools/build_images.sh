#!/usr/bin/env bash
# Build CyNode's container images without any registry:
#   localhost/cynode-base     Debian minbase (debootstrap) + python3, python3-aiohttp, curl,
#                             ca-certificates; user `sandbox` 10000:10000, home /workspace
#   localhost/cynode-sandbox  FROM base; the prompt runner (images/sandbox/cynode_prompt.py as
#                             /usr/local/bin/cynode-prompt) and the warm sandbox's waiting
#                             runner (cynode_warm.py as /usr/local/bin/cynode-warm);
#                             WORKDIR /workspace; USER 10000
#   localhost/cynode-proxy    FROM base; proxy/cynode at /opt/cynode; runs `python3 -m cynode.proxy`
#
# Caching, so `make images` is quick when nothing changed:
#   - the rootfs tarball lives in ~/.cache/cynode/ keyed by suite, mirror, arch and package
#     list (debootstrap is the only slow step);
#   - every image carries the label cynode.image.inputs=<sha256 of its inputs: this script,
#     the Containerfile, the copied sources and the parent image's hash>; an image whose
#     label matches is not rebuilt.
#
# Usage: tools/build_images.sh [--force]    (root; CONTAINERS_CONF defaults to the repo's)
# Env:   CYNODE_CACHE_DIR, CYNODE_DEBIAN_SUITE (bookworm), CYNODE_DEBIAN_MIRROR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/tools/build_images.sh"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}
SUITE=${CYNODE_DEBIAN_SUITE:-bookworm}
MIRROR=${CYNODE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${CYNODE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cynode}
PACKAGES=(python3 python3-aiohttp curl ca-certificates)
SANDBOX_UID=10000
# Bump when the rootfs post-processing below changes: it is part of the tarball's cache key.
ROOTFS_RECIPE=1
LABEL=cynode.image.inputs
BASE=localhost/cynode-base:latest
SANDBOX=localhost/cynode-sandbox:latest
PROXY=localhost/cynode-proxy:latest
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

T0=$SECONDS
log() { printf '[images %4ds] %s\n' "$((SECONDS - T0))" "$*"; }
die() { printf 'build_images: %s\n' "$*" >&2; exit 1; }
sha() { sha256sum | cut -c1-64; }

# Paths, modes and contents of every file under a directory, as one hash.
hash_dir() {
  (cd "$1" && find . -type f -printf '%m %p\n' | LC_ALL=C sort && \
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum) | sha
}

label_of() {
  podman image inspect --format "{{ index .Labels \"$LABEL\" }}" "$1" 2>/dev/null || true
}

id_of() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and rootful Podman); try: sudo make images"
[ -f "$CONTAINERS_CONF" ] || die "CONTAINERS_CONF=$CONTAINERS_CONF does not exist"
command -v podman >/dev/null || die "podman is missing; run: make system-deps"
mkdir -p "$CACHE"

STALE_IDS=()   # images replaced by this run, removed at the end when nothing uses them
WORK=$(mktemp -d "$CACHE/work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------- rootfs tarball (slow)
ARCH=$(dpkg --print-architecture 2>/dev/null || uname -m)
ROOTFS_KEY=$(printf '%s\n' "$SUITE" "$MIRROR" "$ARCH" "${PACKAGES[@]}" "recipe=$ROOTFS_RECIPE" | sha | cut -c1-16)
TARBALL="$CACHE/rootfs-$SUITE-$ARCH-$ROOTFS_KEY.tar"

build_rootfs() {
  command -v debootstrap >/dev/null || die "debootstrap is missing; run: make system-deps"
  local r="$WORK/rootfs" include
  include=$(IFS=,; echo "${PACKAGES[*]}")
  log "debootstrap $SUITE minbase + $include from $MIRROR (about a minute on a fresh machine)"
  # Print one line per debootstrap phase, not one per package; the full log is kept for errors.
  if ! debootstrap --variant=minbase --include="$include" "$SUITE" "$r" "$MIRROR" 2>&1 \
      | tee "$WORK/debootstrap.log" \
      | awk '/^[EW]: /{print "  debootstrap: " $0; fflush(); next}
             /^I: /{if (!seen[$2]++) {print "  debootstrap: " $2 " ..."; fflush()}}'; then
    tail -n 30 "$WORK/debootstrap.log" >&2
    die "debootstrap failed (full log above)"
  fi
  # Images carry no package indexes or caches: smaller, and nothing stale to trust.
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb
  rm -f "$r/etc/resolv.conf" "$r/etc/hostname"   # the build host's; Podman provides its own
  # The sandbox user, written directly so the recipe needs no tool from inside the rootfs.
  echo "sandbox:x:$SANDBOX_UID:$SANDBOX_UID:CyNode sandbox:/workspace:/bin/sh" >>"$r/etc/passwd"
  echo "sandbox:x:$SANDBOX_UID:" >>"$r/etc/group"
  echo "sandbox:!:19000:0:99999:7:::" >>"$r/etc/shadow"
  [ -f "$r/etc/gshadow" ] && echo "sandbox:!::" >>"$r/etc/gshadow"
  install -d -m 0755 -o "$SANDBOX_UID" -g "$SANDBOX_UID" "$r/workspace"
  log "packing rootfs into $TARBALL"
  tar --numeric-owner --xattrs -C "$r" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  rm -rf "$r"
}

# ---------------------------------------------------------------- images
# build_from_context NAME TAG CONTEXT_DIR PARENT_HASH: podman build unless the label matches;
# sets BUILT_HASH (not echoed: a $(...) subshell would lose STALE_IDS).
build_from_context() {
  local name=$1 tag=$2 ctx=$3 parent=$4 want have
  want=$( { echo "$parent"; sha256sum <"$SELF"; hash_dir "$ctx"; } | sha)
  have=$(label_of "$tag")
  if [ "$FORCE" = 0 ] && [ "$have" = "$want" ]; then
    log "$tag is up to date (${want:0:12})"
    BUILT_HASH=$want
    return
  fi
  log "building $tag (${want:0:12})"
  local old; old=$(id_of "$tag")
  chmod -R a+rX "$ctx"
  if ! podman build --pull=never --network=none --label "$LABEL=$want" -t "$tag" \
      -f "$ctx/Containerfile" "$ctx" >"$WORK/$name.build.log" 2>&1; then
    cat "$WORK/$name.build.log" >&2
    die "podman build of $tag failed"
  fi
  [ -n "$old" ] && [ "$old" != "$(id_of "$tag")" ] && STALE_IDS+=("$old")
  BUILT_HASH=$want
}

if [ ! -s "$TARBALL" ]; then
  build_rootfs
else
  log "rootfs cached: $TARBALL"
fi

BASE_HASH=$( { echo "$ROOTFS_KEY"; sha256sum <"$SELF"; } | sha)
if [ "$FORCE" = 0 ] && [ "$(label_of "$BASE")" = "$BASE_HASH" ]; then
  log "$BASE is up to date (${BASE_HASH:0:12})"
else
  log "importing $BASE (${BASE_HASH:0:12})"
  old=$(id_of "$BASE")
  podman import --quiet \
    --change 'CMD ["/bin/sh"]' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL $LABEL=$BASE_HASH" \
    --message "cynode-base: debootstrap $SUITE minbase + ${PACKAGES[*]}" \
    "$TARBALL" "$BASE" >/dev/null
  [ -n "$old" ] && [ "$old" != "$(id_of "$BASE")" ] && STALE_IDS+=("$old")
fi

# Sandbox context: Containerfile + the runners, staged under the names they have in the
# image. Their sources are .py files so ruff, mypy and the unit tests' coverage see them;
# being in the context, they are part of the image's input hash.
ctx="$WORK/sandbox"; mkdir -p "$ctx"
cp "$ROOT/images/sandbox/Containerfile" "$ctx/"
cp "$ROOT/images/sandbox/cynode_prompt.py" "$ctx/cynode-prompt"
cp "$ROOT/images/sandbox/cynode_warm.py" "$ctx/cynode-warm"
chmod 0755 "$ctx/cynode-prompt" "$ctx/cynode-warm"
build_from_context sandbox "$SANDBOX" "$ctx" "$BASE_HASH"; SANDBOX_HASH=$BUILT_HASH

# Proxy context: Containerfile + proxy/cynode without bytecode caches.
ctx="$WORK/proxy"; mkdir -p "$ctx"
cp "$ROOT/images/proxy/Containerfile" "$ctx/"
tar -C "$ROOT/proxy" --exclude=__pycache__ --exclude='*.pyc' -cf - cynode | tar -C "$ctx" -xf -
build_from_context proxy "$PROXY" "$ctx" "$BASE_HASH"; PROXY_HASH=$BUILT_HASH

for id in ${STALE_IDS[@]+"${STALE_IDS[@]}"}; do
  podman rmi "$id" >/dev/null 2>&1 || true   # still used by a container: leave it
done
log "done: $BASE ${BASE_HASH:0:12}, $SANDBOX ${SANDBOX_HASH:0:12}, $PROXY ${PROXY_HASH:0:12}"
