#!/usr/bin/env bash
# buf breaking against a git ref (default: main's previous commit, or origin/main when
# this is a branch). Skips, saying so, when that ref has no protos yet.
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${1:-}
if [ -z "$ref" ]; then
  if [ "$(git rev-parse --abbrev-ref HEAD 2>/dev/null)" = main ]; then ref=HEAD~1; else ref=main; fi
fi
if ! git rev-parse -q --verify "$ref^{commit}" >/dev/null; then
  echo "buf breaking: no commit $ref to compare with; nothing to check"; exit 0
fi
if ! git ls-tree -r --name-only "$ref" -- protos | grep -q '\.proto$'; then
  echo "buf breaking: $ref has no protos yet; nothing to check"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
git archive "$ref" protos buf.yaml | tar -x -C "$tmp"
mkdir -p "$tmp/.build" && cp -r .build/third_party "$tmp/.build/"
(cd "$tmp" && "$OLDPWD/.venv/bin/buf" build -o "$tmp/against.binpb")
.venv/bin/buf build -o "$tmp/current.binpb"
.venv/bin/buf breaking "$tmp/current.binpb" --against "$tmp/against.binpb"
echo "buf breaking: protos are wire-compatible with $ref"
