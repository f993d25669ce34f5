#!/usr/bin/env bash
# buf breaking: the protos must stay wire-compatible with what came before.
#   tools/buf_breaking.sh [REF]
# With REF, compares with that commit alone. Without, on main: with each of the last
# $BUF_BREAKING_DEPTH (10) earlier states of protos/ (the commits that changed them,
# from main's previous commit back), so a break made and then built on inside one
# multi-commit push is still caught; on a branch: with main. Skips, saying so, when a
# ref has no protos yet.
set -euo pipefail
cd "$(dirname "$0")/.."
depth=${BUF_BREAKING_DEPTH:-10}
if [ -n "${1:-}" ]; then
  refs=("$1")
elif [ "$(git rev-parse --abbrev-ref HEAD 2>/dev/null)" = main ]; then
  if ! git rev-parse -q --verify "HEAD~1^{commit}" >/dev/null; then
    echo "buf breaking: no earlier commit to compare with; nothing to check"; exit 0
  fi
  mapfile -t refs < <(git log -n "$depth" --format=%h HEAD~1 -- protos buf.yaml)
else
  refs=(main)
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
.venv/bin/buf build -o "$tmp/current.binpb"
checked=()
for ref in "${refs[@]}"; do
  if ! git rev-parse -q --verify "$ref^{commit}" >/dev/null; then
    echo "buf breaking: no commit $ref to compare with; nothing to check"; continue
  fi
  if ! git ls-tree -r --name-only "$ref" -- protos | grep -q '\.proto$'; then
    echo "buf breaking: $ref has no protos yet; nothing to check"; continue
  fi
  rm -rf "$tmp/against" && mkdir -p "$tmp/against/.build"
  git archive "$ref" protos buf.yaml | tar -x -C "$tmp/against"
  cp -r .build/third_party "$tmp/against/.build/"
  (cd "$tmp/against" && "$OLDPWD/.venv/bin/buf" build -o "$tmp/against.binpb")
  .venv/bin/buf breaking "$tmp/current.binpb" --against "$tmp/against.binpb"
  checked+=("$ref")
done
echo "buf breaking: protos are wire-compatible with ${#checked[@]} earlier state(s): ${checked[*]:-none}"
