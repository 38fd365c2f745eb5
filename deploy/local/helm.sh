#!/usr/bin/env bash
# Helm for the chart's tests (deploy/helm/skein): helm.sh/helm/v4, pinned in deploy/local/helm/go.mod,
# built from the Go module proxy with CGO_ENABLED=0 the first time and cached outside the checkout,
# keyed by version (as the BigQuery emulator is):
#   ${SKEIN_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skein}/helm-<version>/helm
#
#   helm.sh path            build if missing; print the binary's path
#   helm.sh [HELM ARGS...]  run it
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MOD=$HERE/helm
VERSION=$(sed -n 's|^require helm.sh/helm/v4 \(v[^ ]*\).*|\1|p' "$MOD/go.mod")
CACHE=${SKEIN_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skein}
BIN=$CACHE/helm-$VERSION/helm

log() { printf '[helm] %s\n' "$*" >&2; }
die() { printf '[helm] ERROR: %s\n' "$*" >&2; exit 1; }

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
  [[ -n $go ]] || die "Go (>= 1.25) is needed to build Helm"
  log "building helm.sh/helm/v4 $VERSION into $BIN (first time only; a few minutes)"
  local t0=$SECONDS tmp="$BIN.tmp.$$"
  (cd "$MOD" && CGO_ENABLED=0 "$go" build -trimpath -o "$tmp" helm.sh/helm/v4/cmd/helm) >&2 \
    || { rm -f "$tmp"; die "go build failed"; }
  mv -f "$tmp" "$BIN"
  log "built in $((SECONDS - t0))s"
}

case ${1:-} in
  path) build; echo "$BIN" ;;
  *) build; exec "$BIN" "$@" ;;
esac
