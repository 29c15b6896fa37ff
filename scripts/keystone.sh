#!/usr/bin/env bash
# keystone.sh: an OpenStack Keystone (v3) on 127.0.0.1 for cairn's tests,
# from Debian's packages, and a second Swift proxy that authenticates with
# it (authtoken + keystoneauth) in front of the single-node Swift of
# scripts/swift.sh (started first; it keeps its tempauth proxy).
#
#   scripts/keystone.sh start [DIR]   install if needed, configure, start; idempotent
#   scripts/keystone.sh stop  [DIR]   stop Keystone and the second proxy (by PID,
#                                     never by name); scripts/swift.sh's servers stay
#   scripts/keystone.sh env   [DIR]   print the settings to source
#
# DIR defaults to /var/tmp/cairn-keystone; it holds Keystone's own config,
# its SQLite database, fernet and credential keys, the proxy's config, the
# generated passwords (DIR/secrets, DIR/state) and logs (DIR/log). Nothing
# under /etc/keystone is used. Ports (env): CAIRN_KEYSTONE_PORT (15000),
# CAIRN_KEYSTONE_SWIFT_PORT (18082); processes: CAIRN_KEYSTONE_WORKERS (4),
# CAIRN_KEYSTONE_SWIFT_WORKERS (2, the proxy's); the Swift
# settings (CAIRN_SWIFT_DIR, CAIRN_SWIFT_MEMCACHED_PORT, ...) as swift.sh.
#
# Keystone is served by uWSGI (a dependency of Debian's keystone package)
# with keystone-wsgi-public. The catalog has:
#   identity      RegionOne  http://127.0.0.1:15000/v3
#   object-store  RegionOne  http://127.0.0.1:18082/v1/AUTH_%(project_id)s
#   object-store  RegionTwo  http://127.0.0.1:1/v1/AUTH_%(project_id)s
# RegionTwo's endpoint is deliberately unreachable (nothing listens on port
# 1): a client that honours OS_REGION_NAME=RegionTwo fails to connect, so
# the tests can tell that the region chose the endpoint.
# Users (domain Default): admin (project admin, role admin), swift (project
# service, role admin; the proxy's authtoken service user), cairn (project
# cairn, role member, which keystoneauth's operator_roles make the owner of
# AUTH_<cairn project id>), plus an application credential of cairn's.
set -euo pipefail
cmd=${1:-}
DIR=${2:-${CAIRN_KEYSTONE_DIR:-/var/tmp/cairn-keystone}}
IP=127.0.0.1
PORT=${CAIRN_KEYSTONE_PORT:-15000}
PROXY=${CAIRN_KEYSTONE_SWIFT_PORT:-18082}
WORKERS=${CAIRN_KEYSTONE_SWIFT_WORKERS:-2}
KS_WORKERS=${CAIRN_KEYSTONE_WORKERS:-4}
SWIFT_DIR=${CAIRN_SWIFT_DIR:-/var/tmp/cairn-swift}
MEMC=${CAIRN_SWIFT_MEMCACHED_PORT:-11411}
DEAD_PORT=1
KS_URL=http://$IP:$PORT
REGION=RegionOne REGION2=RegionTwo
KS_USER=cairn KS_PROJECT=cairn DOMAIN=Default
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)

say() { echo "[keystone] $*" >&2; }
fail() { say "ERROR: $*"; exit 1; }
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd -P)
ETC=$DIR/etc RUN=$DIR/run LOG=$DIR/log DATA=$DIR/data
CONF=$ETC/keystone.conf
# Bump when the provisioning below changes: the next start rebuilds.
STAMP="v1 $PORT $PROXY $DEAD_PORT"

# ours PID: the process exists and was started by this script for DIR.
ours() { started_with "${1:-}" "CAIRN_KEYSTONE_DIR=$DIR"; }
alive() { [ -f "$RUN/$1.pid" ] && ours "$(cat "$RUN/$1.pid")"; }

# load_state: the passwords and IDs of the last complete provisioning.
load_state() {
  [ -f "$DIR/state" ] && [ -f "$DIR/secrets" ] || return 1
  # shellcheck disable=SC1091
  . "$DIR/secrets"
  # shellcheck disable=SC1091
  . "$DIR/state"
  [ "${STATE_STAMP:-}" = "$STAMP" ]
}

print_env() {
  load_state || fail "not provisioned yet: run $0 start"
  cat <<ENV
export CAIRN_TEST_KEYSTONE=1
export CAIRN_TEST_KEYSTONE_AUTH_URL=$KS_URL/v3
export CAIRN_TEST_KEYSTONE_USER=$KS_USER
export CAIRN_TEST_KEYSTONE_PASSWORD=$CAIRN_PASSWORD
export CAIRN_TEST_KEYSTONE_PROJECT=$KS_PROJECT
export CAIRN_TEST_KEYSTONE_PROJECT_ID=$PROJECT_ID
export CAIRN_TEST_KEYSTONE_USER_DOMAIN=$DOMAIN
export CAIRN_TEST_KEYSTONE_PROJECT_DOMAIN=$DOMAIN
export CAIRN_TEST_KEYSTONE_APP_CRED_ID=$APP_CRED_ID
export CAIRN_TEST_KEYSTONE_APP_CRED_SECRET=$APP_CRED_SECRET
export CAIRN_TEST_KEYSTONE_REGION=$REGION
export CAIRN_TEST_KEYSTONE_STORAGE_URL=http://$IP:$PROXY/v1/AUTH_$PROJECT_ID
export CAIRN_TEST_KEYSTONE_DEAD_REGION=$REGION2
export CAIRN_TEST_KEYSTONE_ADMIN_USER=admin
export CAIRN_TEST_KEYSTONE_ADMIN_PASSWORD=$ADMIN_PASSWORD
export CAIRN_TEST_KEYSTONE_ADMIN_PROJECT=admin
ENV
}

stop_one() {
  local f=$RUN/$1.pid
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do ours "$pid" || break; sleep 0.1; done
    if ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    say "stopped $1 ($pid)"
  fi
  rm -f "$f"
}

stop() {
  # No settings file without a server: test.sh reads one as "already up".
  rm -f "$DIR/env"
  [ -d "$RUN" ] || return 0
  stop_one proxy
  stop_one keystone
}

install_packages() {
  # The keystone package's postinst only creates a database, bootstraps an
  # admin and registers endpoints when debconf says so (the defaults say
  # no; preseed them anyway), and then starts a system-wide keystone on
  # port 5000 with invoke-rc.d, which apt_install's policy-rc.d stops.
  if [ "$(id -u)" = 0 ]; then
    debconf-set-selections <<'SEL'
keystone keystone/configure_db boolean false
keystone keystone/create-admin-tenant boolean false
keystone keystone/register-endpoint boolean false
SEL
  fi
  apt_install "$LOG/apt.log" keystone python3-keystonemiddleware uwsgi-core uwsgi-plugin-python3 sqlite3 curl python3
}

write_keystone_conf() {
  mkdir -p "$ETC" "$RUN" "$LOG" "$DATA"
  cat > "$CONF" <<CONF
[DEFAULT]
public_endpoint = $KS_URL
use_stderr = true
debug = false

[database]
connection = sqlite:///$DATA/keystone.db

[token]
provider = fernet

[fernet_tokens]
key_repository = $DATA/fernet-keys

[fernet_receipts]
key_repository = $DATA/fernet-keys

[credential]
key_repository = $DATA/credential-keys

[identity]
# Test passwords: the cheapest bcrypt, so a few hundred logins cost little.
password_hash_rounds = 4
# bcrypt's own limit (the default, 4096, logs a warning at every login).
max_password_length = 72
CONF
}

write_proxy_conf() {  # needs SWIFT_PASSWORD
  # The password lands in the file: make it private before writing it.
  : > "$ETC/proxy-server.conf"
  chmod 600 "$ETC/proxy-server.conf"
  {
    CAIRN_SWIFT_WORKERS=$WORKERS CAIRN_SWIFT_MEMCACHED_PORT=$MEMC \
      "$HERE/swift.sh" proxy-conf "$SWIFT_DIR" "$PROXY" proxy-keystone "authtoken keystoneauth"
    cat <<CONF

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = $KS_URL/v3
auth_url = $KS_URL/v3
auth_type = password
username = swift
password = $SWIFT_PASSWORD
project_name = service
user_domain_name = $DOMAIN
project_domain_name = $DOMAIN
region_name = $REGION
# Swift's own memcache client (the cache filter) caches tokens.
cache = swift.cache
delay_auth_decision = true
include_service_catalog = false
service_token_roles_required = true

[filter:keystoneauth]
use = egg:swift#keystoneauth
reseller_prefix = AUTH_
operator_roles = admin, member
CONF
  } >> "$ETC/proxy-server.conf"
}

kmanage() {
  env -u PYTHONPATH -u PYTHONHOME CAIRN_KEYSTONE_DIR="$DIR" /usr/bin/keystone-manage --config-file "$CONF" "$@" >> "$LOG/keystone-manage.log" 2>&1 ||
    { tail -20 "$LOG/keystone-manage.log" >&2; fail "keystone-manage $1 failed (log $LOG/keystone-manage.log)"; }
}

# init_db: a fresh database, keys and passwords, and keystone-manage
# bootstrap (admin, project admin, roles admin/member/reader, RegionOne,
# the identity endpoint).
init_db() {
  say "initialising Keystone in $DATA"
  rm -rf "$DATA" "$DIR/state" "$DIR/secrets"
  mkdir -p "$DATA"
  chmod 700 "$DATA"
  local u g; u=$(id -un) g=$(id -gn)
  gen() { /usr/bin/python3 -c 'import secrets; print(secrets.token_urlsafe(18))'; }
  (umask 077; printf 'ADMIN_PASSWORD=%s\nSWIFT_PASSWORD=%s\nCAIRN_PASSWORD=%s\n' "$(gen)" "$(gen)" "$(gen)" > "$DIR/secrets")
  # shellcheck disable=SC1091
  . "$DIR/secrets"
  kmanage db_sync
  # Keystone's oslo.db opens a transaction (BEGIN) even to read; in SQLite's
  # default rollback-journal mode an open reader makes another worker's
  # commit fail with "database is locked". In WAL mode readers never block
  # a writer. The mode is stored in the database file.
  sqlite3 "$DATA/keystone.db" 'PRAGMA journal_mode=WAL;' > /dev/null
  kmanage fernet_setup --keystone-user "$u" --keystone-group "$g"
  kmanage credential_setup --keystone-user "$u" --keystone-group "$g"
  # The password goes through the environment, not the command line.
  OS_BOOTSTRAP_PASSWORD=$ADMIN_PASSWORD kmanage bootstrap \
    --bootstrap-username admin --bootstrap-project-name admin --bootstrap-role-name admin \
    --bootstrap-service-name keystone --bootstrap-region-id "$REGION" \
    --bootstrap-admin-url "$KS_URL/v3" --bootstrap-public-url "$KS_URL/v3" --bootstrap-internal-url "$KS_URL/v3"
}

# provision: through the REST API as admin, the rest of the test cloud;
# prints shell assignments of what the tests need.
provision() {
  KS="$KS_URL/v3" PROXY_URL="http://$IP:$PROXY" DEAD_URL="http://$IP:$DEAD_PORT" \
  REGION="$REGION" REGION2="$REGION2" DOMAIN="$DOMAIN" KS_USER="$KS_USER" KS_PROJECT="$KS_PROJECT" \
  ADMIN_PASSWORD="$ADMIN_PASSWORD" SWIFT_PASSWORD="$SWIFT_PASSWORD" CAIRN_PASSWORD="$CAIRN_PASSWORD" \
  /usr/bin/python3 - <<'PY'
import json, os, shlex, sys, time, urllib.error, urllib.request

E = os.environ
KS = E["KS"]

def call(method, path, body=None, token=None):
    for attempt in range(5):
        req = urllib.request.Request(KS + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("X-Auth-Token", token)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                data = r.read()
                return r.headers, (json.loads(data) if data else None)
        except urllib.error.HTTPError as e:
            # A 500 is SQLite being busy (see init_db); nothing was written.
            if e.code == 500 and attempt < 4:
                time.sleep(1)
                continue
            sys.exit("%s %s: HTTP %d: %s" % (method, path, e.code, e.read().decode(errors="replace")[:500]))

def token(user, password, project, project_domain="Default"):
    h, _ = call("POST", "/auth/tokens", {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": E["DOMAIN"]}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": project_domain}}}}})
    return h["X-Subject-Token"]

adm = token("admin", E["ADMIN_PASSWORD"], "admin")
call("POST", "/regions", {"region": {"id": E["REGION2"]}}, adm)
roles = {r["name"]: r["id"] for r in call("GET", "/roles", token=adm)[1]["roles"]}

def project(name):
    return call("POST", "/projects", {"project": {"name": name, "domain_id": "default"}}, adm)[1]["project"]["id"]

def user(name, password, proj, role):
    uid = call("POST", "/users", {"user": {"name": name, "password": password, "domain_id": "default",
                                           "default_project_id": proj}}, adm)[1]["user"]["id"]
    call("PUT", "/projects/%s/users/%s/roles/%s" % (proj, uid, roles[role]), token=adm)
    return uid

service_project = project("service")
user("swift", E["SWIFT_PASSWORD"], service_project, "admin")
cairn_project = project(E["KS_PROJECT"])
cairn_user = user(E["KS_USER"], E["CAIRN_PASSWORD"], cairn_project, "member")

svc = call("POST", "/services", {"service": {"type": "object-store", "name": "swift",
                                             "description": "cairn test Swift"}}, adm)[1]["service"]["id"]
for region, base in ((E["REGION"], E["PROXY_URL"]), (E["REGION2"], E["DEAD_URL"])):
    for iface in ("public", "internal", "admin"):
        call("POST", "/endpoints", {"endpoint": {"service_id": svc, "interface": iface, "region_id": region,
                                                 "url": base + "/v1/AUTH_%(project_id)s"}}, adm)

# An application credential belongs to its user: create it with a token of
# cairn's, scoped to the project it will be scoped to.
ct = token(E["KS_USER"], E["CAIRN_PASSWORD"], E["KS_PROJECT"])
ac = call("POST", "/users/%s/application_credentials" % cairn_user,
          {"application_credential": {"name": "cairn-test", "description": "cairn's Keystone tests"}},
          ct)[1]["application_credential"]
for k, v in (("PROJECT_ID", cairn_project), ("APP_CRED_ID", ac["id"]), ("APP_CRED_SECRET", ac["secret"])):
    print("%s=%s" % (k, shlex.quote(v)))
PY
}

launch() {  # name command...
  local name=$1; shift
  alive "$name" && return 0
  env -u PYTHONPATH -u PYTHONHOME CAIRN_KEYSTONE_DIR="$DIR" OS_KEYSTONE_CONFIG_DIR="$ETC" OS_KEYSTONE_CONFIG_FILES=keystone.conf \
    nohup "$@" >> "$LOG/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}

launch_keystone() {
  # --http-socket: the workers speak HTTP themselves (no router process),
  # one request per connection, so say so (clients would otherwise reuse
  # a connection uWSGI has closed). One thread per worker: SQLAlchemy's
  # pool finalises SQLite connections in whichever thread collects them,
  # which fails across threads and leaves a transaction open.
  # --die-on-term: SIGTERM stops uWSGI (by default it reloads);
  # --skip-atexit-teardown: no Py_Finalize, which crashes in greenlet.
  launch keystone /usr/bin/uwsgi --plugin python3 --http-socket "$IP:$PORT" \
    --wsgi-file /usr/bin/keystone-wsgi-public --master --processes "$KS_WORKERS" \
    --lazy-apps --need-app --die-on-term --skip-atexit-teardown --buffer-size 65535 \
    --add-header "Connection: close" --chdir "$DIR" --disable-logging
}

# tail_logs: the last lines of each log, for failure messages.
tail_logs() {
  for n in keystone proxy; do
    [ -f "$LOG/$n.log" ] || continue
    echo "--- $LOG/$n.log (last 20 lines)" >&2
    tail -20 "$LOG/$n.log" >&2
  done
}

wait_for() {  # what seconds check names...
  local what=$1 secs=$2 check=$3; shift 3
  local deadline=$(( $(date +%s) + secs ))
  until $check; do
    for n in "$@"; do
      alive "$n" || { tail_logs; fail "$n exited (log $LOG/$n.log)"; }
    done
    [ "$(date +%s)" -lt "$deadline" ] || { tail_logs; fail "$what: not ready after $secs s (logs in $LOG)"; }
    sleep 0.5
  done
}

keystone_up() {
  [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$KS_URL/v3")" = 200 ]
}

# user_token: a token of cairn's, scoped to its project; empty on failure.
user_token() {
  printf '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"%s","domain":{"name":"%s"},"password":"%s"}}},"scope":{"project":{"name":"%s","domain":{"name":"%s"}}}}}' \
    "$KS_USER" "$DOMAIN" "$CAIRN_PASSWORD" "$KS_PROJECT" "$DOMAIN" |
    curl -s -m 10 -D - -o /dev/null -H 'Content-Type: application/json' --data-binary @- "$KS_URL/v3/auth/tokens" |
    tr -d '\r' | awk -F': ' 'tolower($1)=="x-subject-token"{print $2}'
}

healthy() {
  [ "$(curl -s -m 2 "http://$IP:$PROXY/healthcheck" 2>/dev/null)" = OK ] || return 1
  local token; token=$(user_token)
  [ -n "$token" ] || return 1
  case $(curl -s -m 10 -o /dev/null -w '%{http_code}' -I -H "X-Auth-Token: $token" "http://$IP:$PROXY/v1/AUTH_$PROJECT_ID") in
    200|204) return 0 ;;
  esac
  return 1
}

start() {
  mkdir -p "$LOG"
  install_packages
  CAIRN_SWIFT_DIR=$SWIFT_DIR "$HERE/swift.sh" start "$SWIFT_DIR" || fail "scripts/swift.sh start failed"
  local fresh=0
  if ! load_state; then
    # New, half-provisioned or differently configured: start over.
    stop
    write_keystone_conf
    init_db
    fresh=1
  else
    write_keystone_conf
  fi
  launch_keystone
  wait_for "Keystone at $KS_URL" 120 keystone_up keystone
  if [ $fresh = 1 ]; then
    local out
    out=$(provision) || { tail_logs; fail "provisioning Keystone failed"; }
    (umask 077; { echo "STATE_STAMP='$STAMP'"; echo "$out"; } > "$DIR/state.new") && mv "$DIR/state.new" "$DIR/state"
    load_state || fail "provisioning wrote no state"
  fi
  write_proxy_conf
  launch proxy /usr/bin/swift-proxy-server "$ETC/proxy-server.conf" --verbose
  wait_for "Keystone-authenticated Swift proxy at http://$IP:$PROXY" 120 healthy keystone proxy
  (umask 077; print_env > "$DIR/env")
  say "up: Keystone $KS_URL/v3, Swift proxy http://$IP:$PROXY (settings: $DIR/env)"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|env [DIR]" >&2; exit 2 ;;
esac
