#!/usr/bin/env bash
# Regenerates gen/ from protos/: messages, gRPC stubs, .pyi stubs and one descriptor set
# (used by the REST shim, the OpenAPI generator and Envoy's grpc_json_transcoder).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
site=$($PY -c 'import google.api.annotations_pb2 as a, pathlib; print(pathlib.Path(a.__file__).parents[2])')
rm -rf gen/cynode gen/descriptors
mkdir -p gen/descriptors
mapfile -t files < <(cd protos && find cynode -name '*.proto' | LC_ALL=C sort)
$PY -m grpc_tools.protoc -I protos -I "$site" \
  --python_out=gen --pyi_out=gen --grpc_python_out=gen \
  --include_imports --include_source_info \
  --descriptor_set_out=gen/descriptors/cynode.binpb \
  "${files[@]}"
# The generated grpc modules must not shadow the namespace package.
find gen/cynode -name '__init__.py' -delete
if [ -x .venv/bin/python ] && $PY -c 'import cynode.orchestrator.openapi' 2>/dev/null; then
  mkdir -p gen/openapi
  $PY -m cynode.orchestrator.openapi gen/descriptors/cynode.binpb gen/openapi
fi
echo "gen/: $(find gen -type f | wc -l) files from ${#files[@]} protos"
