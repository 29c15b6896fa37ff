#!/usr/bin/env bash
# test.sh: the whole test suite, as CI runs it (.ci/run calls this).
# Installs what the tests need when it is missing: staticcheck (go install),
# PostgreSQL 15 and MariaDB 10.11 for the database agents' tests (Debian),
# and the servers the integration tests use: OpenStack Swift and Keystone
# from Debian's packages (scripts/swift.sh, scripts/keystone.sh, as root)
# and versitygw for S3 (go install, scripts/versitygw.sh). Servers this
# run started are stopped at the end.
#
#   ./test.sh                           everything: format, vet, staticcheck, race tests, short fuzzing,
#                                       tempest's volume API tests (scripts/tempest.sh ci)
#   FUZZTIME=0 ./test.sh                skip the fuzzing pass (seed corpora still run as tests)
#   FUZZTIME=1000000x ./test.sh         fuzz longer (a count of inputs per target)
#   CAIRN_TEST_KEEP_SERVERS=1 ./test.sh leave the servers running for the next run
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:$(go env GOPATH)/bin"
# A count, not a duration: with a duration, Go 1.26's fuzzing coordinator
# can report its own deadline as a failure (golang/go#75804).
FUZZTIME=${FUZZTIME:-50000x}

# Each step says when it began, so a slow run shows where its time went.
step() { printf '\n== %s (%s, %ss in)\n' "$*" "$(date +%T)" "$SECONDS"; }

step "installing test dependencies"
if [ "$(id -u)" = 0 ]; then
  missing=()
  command -v losetup >/dev/null || missing+=(mount)
  command -v nbdinfo >/dev/null || missing+=(libnbd-bin)
  command -v qemu-img >/dev/null || missing+=(qemu-utils)
  command -v fusermount3 >/dev/null || missing+=(fuse3)
  command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
  command -v fio >/dev/null || missing+=(fio)
  # The OpenStack client with Trove's plugin, for the database API's client
  # test, and the cinder command, for the block storage API's.
  dpkg -s python3-troveclient >/dev/null 2>&1 || missing+=(python3-troveclient)
  command -v openstack >/dev/null || missing+=(python3-openstackclient)
  command -v cinder >/dev/null || missing+=(python3-cinderclient)
  # The database agents' tests run real servers (internal/dbagent).
  [ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
  [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
  command -v mariadb-backup >/dev/null || missing+=(mariadb-backup)
  command -v mariadb-dump >/dev/null || missing+=(mariadb-client)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
command -v staticcheck >/dev/null || go install honnef.co/go/tools/cmd/staticcheck@v0.8.2

step "starting test servers (Swift, Keystone, S3)"
started=()
stop_servers() {
  [ "${CAIRN_TEST_KEEP_SERVERS:-}" = 1 ] && return 0
  for s in "${started[@]}"; do scripts/$s.sh stop || true; done
}
trap stop_servers EXIT
for s in swift keystone versitygw postgres; do
  # A server that is already up stays up after the run.
  if [ -f "/var/tmp/cairn-$s/env" ] && scripts/$s.sh start >/dev/null 2>&1; then
    :
  elif scripts/$s.sh start; then
    started+=("$s")
  elif [ "${CI:-}" = true ]; then
    echo "CI=true and the $s test server did not start"; exit 1
  else
    echo "warning: the $s test server did not start; its tests will skip"
  fi
done
set -a
[ -f /var/tmp/cairn-swift/env ] && . /var/tmp/cairn-swift/env
[ -f /var/tmp/cairn-keystone/env ] && . /var/tmp/cairn-keystone/env
[ -f /var/tmp/cairn-versitygw/env ] && . /var/tmp/cairn-versitygw/env
[ -f /var/tmp/cairn-postgres/env ] && . /var/tmp/cairn-postgres/env
set +a

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi

step "go vet"
go vet ./...

step "layers"
scripts/layers.sh

step "staticcheck"
staticcheck ./...

step "go test -race"
# The timeout is per package: cmd/cairn takes about 19 minutes on an idle
# 2-core machine (33 before its crash tests ran a binary without the race
# detector) and up to an hour with both cores busy (stress-ng --cpu 2).
go test -race -count=1 -timeout 75m ./...

step "a year of a backup policy, without the race detector"
# Under -race TestPolicyYear fires one quarter (the catalog's SQLite is
# ten times slower there); the whole year runs here, in seconds.
go test -count=1 -timeout 20m -run '^TestPolicyYear$' ./internal/service/

if [ "$FUZZTIME" != 0 ]; then
  step "fuzzing each target: $FUZZTIME inputs"
  # The targets are found in the sources: listing them with go test -list
  # would link every package's test binary (and run cmd/cairn's TestMain).
  for dir in $(grep -l '^func Fuzz' $(git ls-files '*_test.go' 2>/dev/null || find . -name '*_test.go') | xargs -n1 dirname | sort -u); do
    for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | cut -d' ' -f2 | sort -u); do
      echo "$dir $target"
      if ! out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "./${dir#./}" 2>&1); then
        echo "$out"; exit 1
      fi
    done
  done
fi
step "tempest: OpenStack's own block storage API tests against cairn through Keystone"
# scripts/tempest.sh builds cairn, starts it with a Keystone service user,
# runs tempest's volume API tests and fails when one of those listed in
# scripts/tempest-pass.txt did not pass.
if [ -f /var/tmp/cairn-keystone/env ] && [ "$(id -u)" = 0 ]; then
  scripts/tempest.sh ci
elif [ "${CI:-}" = true ]; then
  echo "CI=true and tempest cannot run (it needs root and the Keystone of scripts/keystone.sh)"; exit 1
else
  echo "warning: tempest skipped: it needs root and the Keystone of scripts/keystone.sh"
fi
echo
echo "all tests passed in ${SECONDS}s"
