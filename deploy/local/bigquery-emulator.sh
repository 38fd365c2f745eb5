#!/usr/bin/env bash
# The BigQuery stand-in for the BigQuery loader's tests: goccy/bigquery-emulator, pinned in
# deploy/local/bigquery-emulator/go.mod, built from the Go module proxy with CGO_ENABLED=0 the
# first time and cached outside the checkout, keyed by version:
#   ${SKEIN_BQ_EMULATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skein}/bigquery-emulator-<version>/
#
#   bigquery-emulator.sh path                 build if missing; print the binary's path
#   bigquery-emulator.sh run PORT [ARGS...]   exec it on 127.0.0.1:PORT (gRPC on PORT+1)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MOD=$HERE/bigquery-emulator
VERSION=$(sed -n 's|^[[:space:]]*github.com/goccy/bigquery-emulator \(v[^ ]*\).*|\1|p' "$MOD/go.mod")
CACHE=${SKEIN_BQ_EMULATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skein}
BIN=$CACHE/bigquery-emulator-$VERSION/bigquery-emulator

# shellcheck source=go-build.sh
source "$HERE/go-build.sh"
build() {
  go_build_cached bigquery-emulator "$BIN" "$MOD" github.com/goccy/bigquery-emulator/cmd/bigquery-emulator \
    "goccy/bigquery-emulator $VERSION" "several minutes"
}

case ${1:-} in
  path) build; echo "$BIN" ;;
  run)
    build
    port=${2:?port}; shift 2
    exec "$BIN" --host=127.0.0.1 --port="$port" --grpc-port=$((port + 1)) --log-level=error "$@"
    ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
