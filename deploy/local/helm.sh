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

# shellcheck source=go-build.sh
source "$HERE/go-build.sh"
build() {
  go_build_cached helm "$BIN" "$MOD" helm.sh/helm/v4/cmd/helm "helm.sh/helm/v4 $VERSION" "a few minutes"
}

case ${1:-} in
  path) build; echo "$BIN" ;;
  *) build; exec "$BIN" "$@" ;;
esac
