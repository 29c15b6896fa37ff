#!/usr/bin/env bash
# test.sh: the whole test suite, as CI runs it (.ci/run calls this).
# Installs what the tests need when it is missing: staticcheck (go install)
# and, as root, the Debian packages the integration tests use.
#
#   ./test.sh            everything: format, vet, staticcheck, race tests, short fuzzing
#   FUZZTIME=0 ./test.sh skip the fuzzing pass (seed corpora still run as tests)
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:$(go env GOPATH)/bin"
FUZZTIME=${FUZZTIME:-5s}

step() { printf '\n== %s\n' "$*"; }

step "installing test dependencies"
if [ "$(id -u)" = 0 ]; then
  missing=()
  command -v losetup >/dev/null || missing+=(mount)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
command -v staticcheck >/dev/null || go install honnef.co/go/tools/cmd/staticcheck@v0.8.2

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi

step "go vet"
go vet ./...

step "staticcheck"
staticcheck ./...

step "go test -race"
go test -race -count=1 -timeout 30m ./...

if [ "$FUZZTIME" != 0 ]; then
  step "fuzzing each target for $FUZZTIME"
  for pkg in $(go list ./...); do
    for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
      echo "$pkg $target"
      go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" >/dev/null
    done
  done
fi
echo
echo "all tests passed"
