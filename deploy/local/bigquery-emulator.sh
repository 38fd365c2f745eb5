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

log() { printf '[bigquery-emulator] %s\n' "$*" >&2; }
die() { printf '[bigquery-emulator] ERROR: %s\n' "$*" >&2; exit 1; }

build() {
  [[ -x $BIN ]] && return 0
  mkdir -p "$(dirname "$BIN")"
  # One build at a time (CI starts one in the background; a test may ask meanwhile and waits).
  exec {lock}>"$BIN.lock"
  flock "$lock"
  [[ -x $BIN ]] && return 0
  local go
  go=$(command -v go || true)
  [[ -z $go && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
  [[ -n $go ]] || die "Go (>= 1.25) is needed to build the emulator"
  mkdir -p "$(dirname "$BIN")"
  log "building goccy/bigquery-emulator $VERSION into $BIN (first time only; several minutes)"
  local t0=$SECONDS tmp="$BIN.tmp.$$"
  (cd "$MOD" && CGO_ENABLED=0 "$go" build -trimpath -o "$tmp" \
    github.com/goccy/bigquery-emulator/cmd/bigquery-emulator) >&2 || { rm -f "$tmp"; die "go build failed"; }
  mv -f "$tmp" "$BIN"
  log "built in $((SECONDS - t0))s"
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
