#!/bin/sh
# `npm run generate`: src/schema.d.ts from the API's own OpenAPI document (app/api/openapi.py), with no server
# running. The drift test (tests/integration/test_typescript_client.py) runs this same script into a temporary
# folder and compares, so the openapi-typescript options live here only.
#   PYTHON       the interpreter with the broker installed (default: the repo's .venv)
#   SCHEMA_OUT   where the types go (default: src/schema.d.ts)
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
repo=$(cd "$here/../.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
out=${SCHEMA_OUT:-$here/src/schema.d.ts}
document=$(mktemp "${TMPDIR:-/tmp}/broker-openapi.XXXXXX.json")
trap 'rm -f "$document"' EXIT
(cd "$repo" && "$python" -m app.api.openapi) > "$document"
# Defaults do not make a field required: a request may leave out `resumable` or `context`, and what an answer
# always carries is marked required by the document itself (serialization mode).
"$here/node_modules/.bin/openapi-typescript" "$document" --output "$out" --default-non-nullable false --silent
