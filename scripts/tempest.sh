#!/usr/bin/env bash
# tempest.sh: run OpenStack tempest's block storage (volume) API tests
# (tempest.api.volume, Debian's tempest 33) against cairn, authenticated by
# the Keystone of scripts/keystone.sh (start it first; test.sh does).
#
#   tempest.sh ci [REGEX]              build cairn, give it a Keystone service
#                                      user, start `cairn serve` with it on a
#                                      fresh data directory, run, stop it; fails
#                                      when a test of scripts/tempest-pass.txt
#                                      did not pass (what CI runs)
#   tempest.sh run CAIRN_URL [REGEX]   register CAIRN_URL in Keystone, write the
#                                      workspace and tempest.conf, run, summarise
#   tempest.sh cleanup                 remove what `run` registered in Keystone
#                                      (and tempest-* users/projects a killed run
#                                      left behind); the workspace stays
#
# CAIRN_URL is cairn's root, e.g. http://127.0.0.1:8776 (version discovery at
# / and /v3/, the API at /v3/{project_id}/). REGEX defaults to all volume API
# tests, '^tempest\.api\.volume\.'. The exit status is 0 when nothing failed.
#
# What `run` registers (idempotent; `cleanup` removes exactly this):
#   region   tempest-cairn
#   services tempest-cairn of types block-storage and volumev3
#   endpoints public/internal/admin CAIRN_URL/v3/%(project_id)s for both, in
#            the region tempest-cairn only, so clients of RegionOne never see them
# Tempest itself creates a project and users per test class (dynamic
# credentials, roles member and admin) and deletes them at the end of the class.
#
# `ci` runs cairn from this checkout: `go build` into DIR/bin, a Keystone
# user REGION-svc (tempest-cairn-svc by default; role admin in project admin, a fresh password
# each run, in DIR/cairn/openrc, mode 600), and `cairn serve --data-dir
# DIR/cairn/data --listen 127.0.0.1:$CAIRN_TEMPEST_PORT --keystone-credentials
# DIR/cairn/openrc` (its log: DIR/cairn/serve.log), stopped by its PID at
# the end. The passes are written to DIR/passed.txt; every test named in
# scripts/tempest-pass.txt must be among them.
#
# Settings (environment):
#   CAIRN_TEMPEST_PORT         the port of `ci`'s cairn (18776)
#   CAIRN_TEMPEST_DIR          workspace (/var/tmp/cairn-tempest): etc/tempest.conf
#                              (mode 600: it holds Keystone's admin password),
#                              tempest.log (every request and response),
#                              logs/run.out (tempest run's output), logs/selected.txt
#                              (the test IDs selected), .stestr/ (the runs' subunit
#                              streams), last-summary.txt
#   CAIRN_KEYSTONE_DIR         keystone.sh's state (/var/tmp/cairn-keystone): the
#                              admin password is ADMIN_PASSWORD in its secrets file
#   CAIRN_KEYSTONE_PORT        15000; or CAIRN_TEMPEST_KEYSTONE_URL (…/v3)
#   CAIRN_TEMPEST_REGION       tempest-cairn
#   CAIRN_TEMPEST_CATALOG_TYPE block-storage (or volumev3; both are registered)
#   CAIRN_TEMPEST_CONCURRENCY  2 (1 runs serially)
#   CAIRN_TEMPEST_MIN_MICROVERSION, CAIRN_TEMPEST_MAX_MICROVERSION
#                              3.0 and 3.10: the range cairn serves; raise the
#                              max as cairn grows, and the tests gated on
#                              microversions join in
#   CAIRN_TEMPEST_BUILD_TIMEOUT   seconds to wait for a volume/snapshot/backup
#                              status (120)
#   CAIRN_TEMPEST_EXTENSIONS   [volume-feature-enabled] api_extensions (default: the
#                              aliases cairn serves, GET /extensions; "all": the
#                              extensions test then wants one named "Hosts"; a
#                              comma list: it wants the first alias; "" skips it)
#   CAIRN_TEMPEST_STORAGE_PROTOCOL, CAIRN_TEMPEST_VENDOR_NAME
#                              what cairn's pools report (nbd, cairn)
#   CAIRN_TEMPEST_BACKUP, CAIRN_TEMPEST_SNAPSHOT, CAIRN_TEMPEST_CLONE
#                              true/false: [volume-feature-enabled] (all true)
#   CAIRN_TEMPEST_EXCLUDE      extra exclude regex (tempest's --exclude-regex)
set -euo pipefail

cmd=${1:-}
DIR=${CAIRN_TEMPEST_DIR:-/var/tmp/cairn-tempest}
KS_DIR=${CAIRN_KEYSTONE_DIR:-/var/tmp/cairn-keystone}
KS_URL=${CAIRN_TEMPEST_KEYSTONE_URL:-http://127.0.0.1:${CAIRN_KEYSTONE_PORT:-15000}/v3}
KS_REGION=RegionOne # where keystone.sh put the identity endpoint
REGION=${CAIRN_TEMPEST_REGION:-tempest-cairn}
# cairn's service user, one per region: a run sets a fresh password,
# which revokes the user's tokens, so two runs in different regions must
# not share it.
SVC_USER=$REGION-svc
SERVICE=tempest-cairn
SERVICE_TYPES="block-storage volumev3"
CATALOG_TYPE=${CAIRN_TEMPEST_CATALOG_TYPE:-block-storage}
CONCURRENCY=${CAIRN_TEMPEST_CONCURRENCY:-2}
MIN_MV=${CAIRN_TEMPEST_MIN_MICROVERSION:-3.0}
MAX_MV=${CAIRN_TEMPEST_MAX_MICROVERSION:-3.10}
BUILD_TIMEOUT=${CAIRN_TEMPEST_BUILD_TIMEOUT:-120}
EXTENSIONS=${CAIRN_TEMPEST_EXTENSIONS-backups,os-availability-zone,os-admin-actions,os-extended-snapshot-attributes,os-vol-tenant-attr,os-volume-actions}
STORAGE_PROTOCOL=${CAIRN_TEMPEST_STORAGE_PROTOCOL:-nbd}
VENDOR_NAME=${CAIRN_TEMPEST_VENDOR_NAME:-cairn}
BACKUP=${CAIRN_TEMPEST_BACKUP:-true}
SNAPSHOT=${CAIRN_TEMPEST_SNAPSHOT:-true}
CLONE=${CAIRN_TEMPEST_CLONE:-true}
DEFAULT_REGEX='^tempest\.api\.volume\.'
# Tests that need a service this cloud lacks without saying so (no
# @utils.services tag, so no skip): they error rather than skip.
#   VolumesExtendTest.test_volume_extend creates its volume with
#   imageRef=[compute] image_ref, which reads the image first from Glance.
EXCLUDE='^tempest\.api\.volume\.test_volumes_extend\.VolumesExtendTest\.test_volume_extend\b'
PY=/usr/bin/python3 # Debian's, which has tempest's modules (not a pyenv one)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
PORT=${CAIRN_TEMPEST_PORT:-18776}

say() { echo "[tempest] $*" >&2; }
fail() {
  say "ERROR: $*"
  exit 1
}
usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ensure_tools: tempest (with stestr) and python3-subunit from Debian.
ensure_tools() {
  if [ -x /usr/bin/tempest ] && [ -x /usr/bin/stestr ] && [ -x /usr/bin/openstack ] &&
    "$PY" -c 'import subunit, testtools' 2>/dev/null; then
    return
  fi
  [ "$(id -u)" = 0 ] || fail "tempest is not installed; as root: apt-get install tempest python3-subunit python3-openstackclient"
  say "installing tempest from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q tempest python3-subunit python3-openstackclient >/dev/null; then
    apt-get update -q >/dev/null
    apt-get install -y -q tempest python3-subunit python3-openstackclient >/dev/null
  fi
}

# keystone_env: the admin's OS_* settings for the openstack command.
keystone_env() {
  curl -fsS -o /dev/null --max-time 10 "$KS_URL" ||
    fail "Keystone does not answer at $KS_URL; start it: cd /work/main && scripts/swift.sh start && scripts/keystone.sh start"
  if [ -z "${CAIRN_TEMPEST_ADMIN_PASSWORD:-}" ]; then
    [ -r "$KS_DIR/secrets" ] || fail "no $KS_DIR/secrets (set CAIRN_KEYSTONE_DIR or CAIRN_TEMPEST_ADMIN_PASSWORD)"
    # shellcheck disable=SC1091
    CAIRN_TEMPEST_ADMIN_PASSWORD=$(. "$KS_DIR/secrets" && printf %s "${ADMIN_PASSWORD:-}")
    [ -n "$CAIRN_TEMPEST_ADMIN_PASSWORD" ] || fail "no ADMIN_PASSWORD in $KS_DIR/secrets"
  fi
  unset OS_CLOUD OS_TOKEN OS_AUTH_TYPE OS_PROJECT_ID OS_USER_ID OS_REGION_NAME \
    OS_APPLICATION_CREDENTIAL_ID OS_APPLICATION_CREDENTIAL_SECRET OS_SYSTEM_SCOPE
  export OS_AUTH_URL=$KS_URL OS_IDENTITY_API_VERSION=3 OS_INTERFACE=public \
    OS_USERNAME=admin OS_PASSWORD=$CAIRN_TEMPEST_ADMIN_PASSWORD OS_PROJECT_NAME=admin \
    OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default
}

# os ARGS: the openstack command, retried when Keystone drops the
# connection (its uWSGI workers do, now and then, under load).
OS_ERR=$(mktemp)
trap 'rm -f "$OS_ERR"' EXIT
os() {
  local try out rc
  for try in 1 2 3 4; do
    rc=0
    out=$(openstack "$@" 2>"$OS_ERR") || rc=$?
    if [ "$rc" = 0 ] || ! grep -qE 'Unable to establish connection|Connection aborted|Service Unavailable|HTTP 50[234]' "$OS_ERR"; then
      break
    fi
    say "openstack $1 $2: Keystone dropped the connection (try $try); retrying"
    sleep "$try"
  done
  [ -z "$out" ] || printf '%s\n' "$out"
  [ "$rc" = 0 ] || cat "$OS_ERR" >&2
  return "$rc"
}

# service_ids TYPE: the IDs of our services of TYPE (normally one).
service_ids() {
  os service list --long -f value -c ID -c Name -c Type |
    awk -v n="$SERVICE" -v t="$1" '$2 == n && $3 == t { print $1 }'
}

# register URL: the region, the services and their endpoints, as above.
register() {
  local api=$1/v3/%\(project_id\)s type svc iface ids id url first
  os region show "$REGION" >/dev/null 2>&1 ||
    os region create --description "cairn under tempest (tempest.sh)" "$REGION" >/dev/null
  for type in $SERVICE_TYPES; do
    svc=$(service_ids "$type" | head -n1)
    if [ -z "$svc" ]; then
      svc=$(os service create --name "$SERVICE" --description "cairn under tempest (tempest.sh)" \
        -f value -c id "$type")
    fi
    for iface in public internal admin; do
      ids=$(os endpoint list --service "$svc" --interface "$iface" --region "$REGION" -f value -c ID -c URL)
      if [ -z "$ids" ]; then
        os endpoint create --region "$REGION" "$svc" "$iface" "$api" >/dev/null
        continue
      fi
      first=1
      while read -r id url; do
        if [ "$first" = 1 ]; then
          [ "$url" = "$api" ] || os endpoint set --url "$api" "$id"
          first=0
        else
          os endpoint delete "$id"
        fi
      done <<<"$ids"
    done
  done
  say "registered $SERVICE ($SERVICE_TYPES) at $api in region $REGION"
}

# unregister: the endpoints, services and region of register.
unregister() {
  local type svc id
  for type in $SERVICE_TYPES; do
    for svc in $(service_ids "$type"); do
      for id in $(os endpoint list --service "$svc" -f value -c ID); do
        os endpoint delete "$id"
      done
      os service delete "$svc"
      say "deleted service $SERVICE ($type)"
    done
  done
  # The region goes only when nothing else is in it.
  if os region show "$REGION" >/dev/null 2>&1; then
    if [ -z "$(os endpoint list --region "$REGION" -f value -c ID)" ]; then
      os region delete "$REGION"
      say "deleted region $REGION"
    else
      say "region $REGION still has endpoints not ours; left"
    fi
  fi
}

# leftovers: projects and users a killed run's dynamic credentials left
# (tempest names them tempest-<TestClass>-<number>...; Default domain).
leftovers() {
  local kind name id
  for kind in user project; do
    os "$kind" list --domain Default -f value -c ID -c Name | while read -r id name; do
      case $name in
      tempest-*) os "$kind" delete "$id" && say "deleted leftover $kind $name" ;;
      esac
    done
  done
}

# write_conf URL: the workspace and its tempest.conf.
write_conf() {
  if [ ! -f "$DIR/.stestr.conf" ]; then
    # tempest init wants an empty directory (DIR holds cairn's build and
    # data by now) and logs to ./tempest.log: it makes the workspace in a
    # scratch directory, whose files (no absolute path in them) are
    # copied into DIR.
    local scratch
    scratch=$(mktemp -d)
    (cd "$scratch" && tempest init --workspace-path "$scratch/workspace.yaml" --name cairn "$scratch/ws") >"$scratch/init.out" 2>&1 ||
      fail "tempest init failed: $(tail -n 3 "$scratch/init.out")"
    cp -a "$scratch/ws/." "$DIR/"
    rm -rf "$scratch"
  fi
  mkdir -p "$DIR/etc" "$DIR/logs" "$DIR/tempest_lock"
  local conf=$DIR/etc/tempest.conf
  (
    umask 077
    cat >"$conf.tmp" <<CONF
# Written by tempest.sh: overwritten on every run.
# A cloud with Keystone and cairn's block storage API only.
# Logging: etc/logging.conf (from tempest init) writes $DIR/tempest.log,
# every request and response included.

[oslo_concurrency]
lock_path = $DIR/tempest_lock

[auth]
# Tempest creates a project and users per test class and deletes them:
# primary/alt get role member (tempest_roles is empty), admin gets admin.
use_dynamic_credentials = true
create_isolated_networks = false
tempest_roles =
admin_username = admin
admin_password = $CAIRN_TEMPEST_ADMIN_PASSWORD
admin_project_name = admin
admin_domain_name = Default
admin_user_domain_name = Default
admin_project_domain_name = Default
default_credentials_domain_name = Default

[identity]
uri_v3 = $KS_URL
auth_version = v3
region = $KS_REGION
v3_endpoint_type = public
admin_role = admin

[identity-feature-enabled]
api_v2 = false
api_v3 = true

[service_available]
cinder = true
nova = false
glance = false
neutron = false
swift = false
horizon = false

[volume]
catalog_type = $CATALOG_TYPE
region = $REGION
endpoint_type = public
min_microversion = $MIN_MV
max_microversion = $MAX_MV
build_interval = 1
build_timeout = $BUILD_TIMEOUT
volume_size = 1
volume_size_extend = 1
storage_protocol = $STORAGE_PROTOCOL
vendor_name = $VENDOR_NAME

[volume-feature-enabled]
backup = $BACKUP
snapshot = $SNAPSHOT
clone = $CLONE
manage_volume = false
manage_snapshot = false
multi_backend = false
extend_attached_volume = false
extend_attached_encrypted_volume = false
api_extensions = $EXTENSIONS

[compute-feature-enabled]
attach_encrypted_volume = false

[validation]
run_validation = false

[enforce_scope]
cinder = false
CONF
    mv "$conf.tmp" "$conf"
  )
}

# summarise [LISTED]: counts and each failure's first line of reason, from
# the last run in the workspace's stestr repository (LISTED: the file of the
# test IDs selected, to count the tests of classes that failed or skipped
# as a whole); the exit status is 1 when any test failed.
summarise() {
  (cd "$DIR" && stestr last --subunit) | "$PY" -c '
import sys, subunit, testtools
listed = []
if len(sys.argv) > 1:
    listed = [l.strip().split("[", 1)[0] for l in open(sys.argv[1]) if l.startswith("tempest.")]
tests = {}
result = testtools.StreamToDict(lambda t: tests.__setitem__(t["id"], t))
result.startTestRun()
subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout").run(result)
result.stopTestRun()
def reason(t):
    text = ""
    for key in ("traceback", "reason"):
        if key in t["details"]:
            text = t["details"][key].as_text()
            break
    lines = [l for l in text.splitlines() if l.strip()]
    if not lines:
        return "(no reason recorded)"
    # The exception after the last frame ("  File ..." and its indented
    # source line), plus a tempest "Details:" line when there is one.
    last = max([i for i, l in enumerate(lines) if l.startswith("  File ")], default=-1)
    i = last + 1
    while last >= 0 and i < len(lines) and lines[i].startswith(" "):
        i += 1
    if i >= len(lines):
        return lines[-1].strip()[:300]
    out = lines[i].strip()
    if i + 1 < len(lines) and lines[i + 1].startswith("Details:"):
        out += " | " + lines[i + 1].strip()
    return out[:300]
def name(tid):
    return tid.split("[", 1)[0]
def cls_of(tid):  # "setUpClass (tempest.x.Class)" -> "tempest.x.Class"
    return tid[tid.find("(") + 1:].rstrip(")") if tid.startswith("setUpClass") else None
def members(c):
    return len([l for l in listed if l.startswith(c + ".")])
by = {"success": [], "fail": [], "skip": [], "other": []}
passed_file = __import__("os").environ.get("TEMPEST_PASSED_FILE")
for tid, t in sorted(tests.items()):
    if tid == "process-returncode" and t["status"] == "success":
        continue
    by[t["status"] if t["status"] in by else "other"].append(t)
def split(ts):
    whole = [t for t in ts if cls_of(t["id"])]
    return len(ts) - len(whole), len(whole), sum(members(cls_of(t["id"])) for t in whole)
fail_n, fail_cls, fail_in = split(by["fail"] + by["other"])
skip_n, skip_cls, skip_in = split(by["skip"])
if passed_file:
    with open(passed_file, "w") as f:
        for t in by["success"]:
            f.write(name(t["id"]) + "\n")
if listed:
    print("selected: %d tests" % len(listed))
print("passed:   %d" % len(by["success"]))
print("failed:   %d  (%d tests, plus %d classes whose setUpClass failed%s)" % (
    fail_n + fail_in, fail_n, fail_cls, ", with %d tests that did not run" % fail_in if listed else ""))
print("skipped:  %d  (%d tests, plus %d classes skipped whole%s)" % (
    skip_n + skip_in, skip_n, skip_cls, ", with %d tests" % skip_in if listed else ""))
if listed:
    seen = {name(t) for t in tests} | {l for l in listed for t in tests if cls_of(t) and l.startswith(cls_of(t) + ".")}
    missing = [l for l in listed if l not in seen]
    if missing:
        print("not reported: %d (a worker died?): %s" % (len(missing), " ".join(missing[:5])))
if by["fail"] or by["other"]:
    print("\nfailures:")
    for t in by["fail"] + by["other"]:
        extra = " (%d tests)" % members(cls_of(t["id"])) if cls_of(t["id"]) and listed else ""
        print("  %s%s\n      %s" % (name(t["id"]), extra, reason(t)))
if by["skip"]:
    print("\nskips:")
    for t in by["skip"]:
        extra = " (%d tests)" % members(cls_of(t["id"])) if cls_of(t["id"]) and listed else ""
        print("  %s%s: %s" % (name(t["id"]), extra, reason(t)))
sys.exit(1 if by["fail"] or by["other"] else 0)
' "$@"
}

run() {
  local url=${1:-} regex=${2:-$DEFAULT_REGEX} exclude=$EXCLUDE rc=0 status
  [ -n "$url" ] || usage
  url=${url%/}
  case $url in http://* | https://*) ;; *) fail "CAIRN_URL must be http(s)://HOST:PORT, not $url" ;; esac
  ensure_tools
  status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$url/" || true)
  case $status in
  200 | 300) ;;
  *) fail "cairn does not answer version discovery at $url/ (HTTP $status)" ;;
  esac
  keystone_env
  register "$url"
  write_conf
  [ -z "${CAIRN_TEMPEST_EXCLUDE:-}" ] || exclude="$exclude|$CAIRN_TEMPEST_EXCLUDE"
  local par=(--concurrency "$CONCURRENCY")
  [ "$CONCURRENCY" != 1 ] || par=(--serial)
  (cd "$DIR" && tempest run --config-file "$DIR/etc/tempest.conf" --list-tests \
    --regex "$regex" --exclude-regex "$exclude") 2>/dev/null | grep '^tempest\.' >"$DIR/logs/selected.txt" ||
    fail "no test matches --regex '$regex'"
  say "running tempest $(dpkg-query -W -f '${Version}' tempest 2>/dev/null) in $DIR: --regex '$regex' ${par[*]}"
  (
    cd "$DIR"
    tempest run --config-file "$DIR/etc/tempest.conf" --regex "$regex" \
      --exclude-regex "$exclude" "${par[@]}" >"$DIR/logs/run.out" 2>&1
  ) || rc=$?
  if ! (cd "$DIR" && stestr last --subunit >/dev/null 2>&1); then
    tail -n 30 "$DIR/logs/run.out" >&2
    fail "tempest run ended ($rc) without recording a run; see $DIR/logs/run.out"
  fi
  say "tempest run exited $rc; output in $DIR/logs/run.out, requests and responses in $DIR/tempest.log"
  TEMPEST_PASSED_FILE="$DIR/passed.txt" summarise "$DIR/logs/selected.txt" | tee "$DIR/last-summary.txt"
}

# cairn_pid: the PID of the cairn `ci` started, if it still runs.
cairn_pid() {
  local f=$DIR/cairn/serve.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--data-dir $DIR/cairn/data " && echo "$pid"
}

stop_cairn() {
  local pid
  pid=$(cairn_pid) || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  rm -f "$DIR/cairn/serve.pid"
  say "stopped cairn ($pid)"
}

# start_cairn: build and start cairn on a fresh data directory, accepting
# the tokens of Keystone through a service user of its own.
start_cairn() {
  local pw uid url=http://127.0.0.1:$PORT
  stop_cairn
  mkdir -p "$DIR/bin" "$DIR/cairn"
  rm -rf "$DIR/cairn/data"
  say "building cairn"
  (cd "$HERE/.." && go build -o "$DIR/bin/cairn" ./cmd/cairn) || fail "go build failed"
  pw=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(18))')
  uid=$(os user show --domain Default -f value -c id "$SVC_USER" 2>/dev/null || true)
  if [ -z "$uid" ]; then
    uid=$(os user create --domain Default --password="$pw" -f value -c id "$SVC_USER")
  else
    os user set --password="$pw" "$uid"
  fi
  os role add --project admin --user "$uid" admin
  (
    umask 077
    printf 'export OS_AUTH_URL=%s\nexport OS_USERNAME=%s\nexport OS_PASSWORD=%s\nexport OS_USER_DOMAIN_NAME=Default\nexport OS_PROJECT_NAME=admin\nexport OS_PROJECT_DOMAIN_NAME=Default\n' \
      "$KS_URL" "$SVC_USER" "$pw" >"$DIR/cairn/openrc"
  )
  (
    cd "$DIR/cairn"
    env -u CAIRN_CONFIG nohup "$DIR/bin/cairn" serve --data-dir "$DIR/cairn/data" --listen "127.0.0.1:$PORT" \
      --keystone-credentials "$DIR/cairn/openrc" --data-plane embedded --wal-archive off \
      --nbd-socket "$DIR/cairn/nbd.sock" --log-format text >"$DIR/cairn/serve.log" 2>&1 </dev/null &
    echo $! >"$DIR/cairn/serve.pid"
  )
  for _ in $(seq 300); do
    if curl -fs -o /dev/null --max-time 2 "$url/healthz"; then
      say "cairn serving on $url (log $DIR/cairn/serve.log)"
      return 0
    fi
    cairn_pid >/dev/null || { tail -n 20 "$DIR/cairn/serve.log" >&2; fail "cairn serve exited"; }
    sleep 0.2
  done
  fail "cairn did not answer at $url/healthz"
}

# ci [REGEX]: cairn from this checkout under tempest; fails when a test
# expected to pass (scripts/tempest-pass.txt) did not.
ci() {
  local regex=${1:-$DEFAULT_REGEX} rc=0 expected=$HERE/tempest-pass.txt missing
  ensure_tools
  keystone_env
  mkdir -p "$DIR"
  trap 'stop_cairn; rm -f "$OS_ERR"' EXIT
  start_cairn
  run "http://127.0.0.1:$PORT" "$regex" || rc=$?
  stop_cairn
  [ -f "$DIR/passed.txt" ] || fail "no list of passes"
  say "$(wc -l <"$DIR/passed.txt") tests passed (the issue's target: 150 of the 199 that need no compute or image service)"
  if [ "$regex" = "$DEFAULT_REGEX" ] && [ -f "$expected" ]; then
    missing=$(grep -v '^#' "$expected" | grep . | sort | comm -23 - <(sort "$DIR/passed.txt") || true)
    if [ -n "$missing" ]; then
      say "tests of $expected that did not pass:"
      printf '%s\n' "$missing" | sed 's/^/  /' >&2
      return 1
    fi
    say "every test of $expected passed"
    return 0
  fi
  return "$rc"
}

cleanup() {
  ensure_tools
  keystone_env
  unregister
  leftovers
}

case $cmd in
ci)
  shift
  ci "$@"
  ;;
run)
  shift
  run "$@"
  ;;
cleanup) cleanup ;;
*) usage ;;
esac
