# Sourced by helm.sh and bigquery-emulator.sh: build a Go command pinned in a go.mod beside them,
# from the Go module proxy with CGO_ENABLED=0, once per version, into a cache outside the checkout.
#
#   go_build_cached TAG BIN MOD PACKAGE WHAT HOW_LONG
#     TAG       prefix of the log lines ([TAG] ...)
#     BIN       the cached binary; nothing is built when it is already there
#     MOD       the folder holding the go.mod that pins PACKAGE
#     PACKAGE   the command to build (go build's argument)
#     WHAT      what is built, as the log and the error say it
#     HOW_LONG  how long a cold build takes, as the log says it

go_build_cached() {
  local tag=$1 bin=$2 mod=$3 package=$4 what=$5 how_long=$6
  [[ -x $bin ]] && return 0
  mkdir -p "$(dirname "$bin")"
  # One build at a time (CI starts one in the background; a test may ask meanwhile and waits).
  local lock
  exec {lock}>"$bin.lock"
  flock "$lock"
  [[ -x $bin ]] && return 0
  local go
  go=$(command -v go || true)
  [[ -z $go && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
  if [[ -z $go ]]; then
    printf '[%s] ERROR: Go (>= 1.25) is needed to build %s\n' "$tag" "$what" >&2
    exit 1
  fi
  printf '[%s] building %s into %s (first time only; %s)\n' "$tag" "$what" "$bin" "$how_long" >&2
  local t0=$SECONDS tmp="$bin.tmp.$$"
  if ! (cd "$mod" && CGO_ENABLED=0 "$go" build -trimpath -o "$tmp" "$package") >&2; then
    rm -f "$tmp"
    printf '[%s] ERROR: go build failed\n' "$tag" >&2
    exit 1
  fi
  mv -f "$tmp" "$bin"
  printf '[%s] built in %ss\n' "$tag" "$((SECONDS - t0))" >&2
}
