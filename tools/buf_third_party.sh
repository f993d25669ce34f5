#!/usr/bin/env bash
# Copies the google/api protos our contracts import from the installed
# googleapis-common-protos wheel, so buf never reaches the network.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
site=$($PY -c 'import google.api.annotations_pb2 as a, pathlib; print(pathlib.Path(a.__file__).parents[2])')
mkdir -p .build/third_party/google/api
cp "$site"/google/api/{annotations,http}.proto .build/third_party/google/api/
