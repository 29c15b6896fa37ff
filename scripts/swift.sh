#!/usr/bin/env bash
# swift.sh: a single-node OpenStack Swift on 127.0.0.1 for cairn's tests and
# benchmarks, from Debian's packages: tempauth (native API) and s3api.
#
#   scripts/swift.sh start [DIR]   install if needed, configure, start; idempotent
#   scripts/swift.sh stop  [DIR]   stop what start started (by PID, never by name)
#   scripts/swift.sh env   [DIR]   print the settings to source
#
# DIR defaults to /var/tmp/cairn-swift. Ports (env): CAIRN_SWIFT_PROXY_PORT
# (18080), CAIRN_SWIFT_BACKEND_PORT (16200, 16201, 16202 for object,
# container, account), CAIRN_SWIFT_MEMCACHED_PORT (11411),
# CAIRN_SWIFT_WORKERS (proxy and object workers, default 2).
set -euo pipefail
cmd=${1:-}
DIR=${2:-${CAIRN_SWIFT_DIR:-/var/tmp/cairn-swift}}
IP=127.0.0.1
PROXY=${CAIRN_SWIFT_PROXY_PORT:-18080}
OBJ=${CAIRN_SWIFT_BACKEND_PORT:-16200}
CONT=$((OBJ + 1))
ACCT=$((OBJ + 2))
MEMC=${CAIRN_SWIFT_MEMCACHED_PORT:-11411}
WORKERS=${CAIRN_SWIFT_WORKERS:-2}
ACCOUNT=test USER=tester KEY=testing

say() { echo "[swift] $*" >&2; }
fail() { say "ERROR: $*"; exit 1; }
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd -P)
ETC=$DIR/etc RUN=$DIR/run LOG=$DIR/log DEV=$DIR/srv/d1

# ours PID: the process exists and was started by this script for DIR.
ours() { started_with "${1:-}" "CAIRN_SWIFT_DIR=$DIR"; }
alive() { [ -f "$RUN/$1.pid" ] && ours "$(cat "$RUN/$1.pid")"; }

print_env() {
  cat <<ENV
export ST_AUTH=http://$IP:$PROXY/auth/v1.0
export ST_USER=$ACCOUNT:$USER
export ST_KEY=$KEY
export CAIRN_TEST_SWIFT=1
export CAIRN_TEST_SWIFT_S3_ENDPOINT=http://$IP:$PROXY
export CAIRN_TEST_SWIFT_S3_ACCESS_KEY=$ACCOUNT:$USER
export CAIRN_TEST_SWIFT_S3_SECRET_KEY=$KEY
ENV
}

stop() {
  [ -d "$RUN" ] || return 0
  for name in proxy object-updater object container account memcached; do
    local f=$RUN/$name.pid
    [ -f "$f" ] || continue
    local pid; pid=$(cat "$f")
    if ours "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do ours "$pid" || break; sleep 0.1; done
      ours "$pid" && kill -KILL "$pid" 2>/dev/null || true
      say "stopped $name ($pid)"
    fi
    rm -f "$f"
  done
  if [ -f "$RUN/loop-mount" ] && mountpoint -q "$DEV"; then
    umount "$DEV" && rm -f "$RUN/loop-mount"
  fi
  # No settings file without a server: test.sh reads one as "already up".
  rm -f "$DIR/env"
}

install_packages() {
  apt_install "$LOG/apt.log" swift swift-proxy swift-account swift-container swift-object memcached curl python3
}

# The object server keeps metadata in extended attributes.
xattrs_work() {
  /usr/bin/python3 - "$1" <<'PY'
import os, sys
p = os.path.join(sys.argv[1], ".xattr-test")
open(p, "w").close()
try:
    os.setxattr(p, "user.test", b"x" * 1024)
    ok = os.getxattr(p, "user.test") == b"x" * 1024
except OSError:
    ok = False
os.unlink(p)
sys.exit(0 if ok else 1)
PY
}

configure() {
  mkdir -p "$ETC" "$RUN" "$LOG" "$DEV"
  if ! grep -q '^\[swift-hash\]' /etc/swift/swift.conf 2>/dev/null; then
    [ "$(id -u)" = 0 ] || fail "/etc/swift/swift.conf is missing"
    mkdir -p /etc/swift
    printf '[swift-hash]\nswift_hash_path_suffix = cairn-test\nswift_hash_path_prefix = cairn-test\n[storage-policy:0]\nname = Policy-0\ndefault = yes\n' > /etc/swift/swift.conf
  fi
  if ! mountpoint -q "$DEV" && ! xattrs_work "$DEV"; then
    [ "$(id -u)" = 0 ] || fail "$DEV lacks user xattrs and loop mounts need root"
    [ -f "$DIR/disk.img" ] || { truncate -s 8G "$DIR/disk.img"; mkfs.ext4 -q -F -m 0 "$DIR/disk.img"; }
    mount -o loop,noatime "$DIR/disk.img" "$DEV" && echo "$DEV" > "$RUN/loop-mount"
  fi
  local stamp="$OBJ $CONT $ACCT"
  if [ "$(cat "$ETC/rings.stamp" 2>/dev/null)" != "$stamp" ]; then
    for spec in object:$OBJ container:$CONT account:$ACCT; do
      local t=${spec%%:*} port=${spec##*:}
      rm -f "$ETC/$t.builder" "$ETC/$t.ring.gz"
      swift-ring-builder "$ETC/$t.builder" create 8 1 1 >/dev/null
      swift-ring-builder "$ETC/$t.builder" add "r1z1-$IP:$port/d1" 100 >/dev/null
      swift-ring-builder "$ETC/$t.builder" rebalance >/dev/null || [ $? -le 1 ] || fail "ring rebalance ($t)"
    done
    echo "$stamp" > "$ETC/rings.stamp"
  fi
  local me; me=$(id -un)
  for spec in object:$OBJ container:$CONT account:$ACCT; do
    local t=${spec%%:*} port=${spec##*:} w=0
    [ "$t" = object ] && w=$WORKERS
    cat > "$ETC/$t-server.conf" <<CONF
[DEFAULT]
bind_ip = $IP
bind_port = $port
workers = $w
user = $me
swift_dir = $ETC
devices = $DIR/srv
mount_check = false
log_name = $t-server
log_level = WARNING

[pipeline:main]
pipeline = healthcheck $t-server

[app:$t-server]
use = egg:swift#$t

[filter:healthcheck]
use = egg:swift#healthcheck

[$t-updater]
interval = 5
concurrency = 1
CONF
  done
  {
    proxy_conf "$PROXY" proxy-server "s3api tempauth"
    cat <<CONF

[filter:s3api]
use = egg:swift#s3api
location = us-east-1

[filter:tempauth]
use = egg:swift#tempauth
user_${ACCOUNT}_${USER} = $KEY .admin
CONF
  } > "$ETC/proxy-server.conf"
}

# proxy_conf PORT LOG_NAME AUTH: a proxy server's config on this node's
# rings, with the filters in AUTH (names, in pipeline order) among the
# common ones; the caller appends AUTH's sections. keystone.sh uses it for
# its Keystone-authenticated proxy.
proxy_conf() {
  local port=$1 name=$2 auth=$3
  cat <<CONF
[DEFAULT]
bind_ip = $IP
bind_port = $port
workers = $WORKERS
user = $(id -un)
swift_dir = $ETC
log_name = $name
log_level = WARNING

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck cache listing_formats bulk $auth copy slo dlo proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true
# One storage node: never take it out of rotation after one error.
error_suppression_interval = 0

[filter:cache]
use = egg:swift#memcache
memcache_servers = $IP:$MEMC

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
CONF
}

launch() {  # name command...
  local name=$1; shift
  alive "$name" && return 0
  env -u PYTHONPATH -u PYTHONHOME CAIRN_SWIFT_DIR="$DIR" nohup "$@" >> "$LOG/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}

healthy() {
  for port in $OBJ $CONT $ACCT $PROXY; do
    [ "$(curl -s -m 2 "http://$IP:$port/healthcheck" 2>/dev/null)" = OK ] || return 1
  done
  local token
  token=$(curl -s -m 5 -D - -o /dev/null -H "X-Auth-User: $ACCOUNT:$USER" -H "X-Auth-Key: $KEY" "http://$IP:$PROXY/auth/v1.0" |
    tr -d '\r' | awk -F': ' 'tolower($1)=="x-auth-token"{print $2}')
  [ -n "$token" ] || return 1
  case $(curl -s -m 5 -o /dev/null -w '%{http_code}' -I -H "X-Auth-Token: $token" "http://$IP:$PROXY/v1/AUTH_$ACCOUNT") in
    200|204) return 0 ;;
  esac
  return 1
}

start() {
  mkdir -p "$LOG"
  install_packages
  configure
  local mc_user=()
  [ "$(id -u)" = 0 ] && mc_user=(-u "$(id -u memcache >/dev/null 2>&1 && echo memcache || echo nobody)")
  launch memcached /usr/bin/memcached -l "$IP" -p "$MEMC" -U 0 -m 64 "${mc_user[@]}"
  for t in account container object; do
    launch "$t" "/usr/bin/swift-$t-server" "$ETC/$t-server.conf"
  done
  launch proxy /usr/bin/swift-proxy-server "$ETC/proxy-server.conf"
  local deadline=$(( $(date +%s) + 90 ))
  until healthy; do
    for n in memcached account container object proxy; do
      alive "$n" || { tail -20 "$LOG/$n.log" >&2; fail "$n exited (log $LOG/$n.log)"; }
    done
    [ "$(date +%s)" -lt "$deadline" ] || fail "not healthy after 90 s (logs in $LOG)"
    sleep 0.5
  done
  # Replays container listing updates that timed out.
  launch object-updater /usr/bin/swift-object-updater "$ETC/object-server.conf"
  print_env > "$DIR/env"
  say "up: proxy http://$IP:$PROXY (settings: $DIR/env)"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  env) print_env ;;
  proxy-conf) proxy_conf "${3:?port}" "${4:?log name}" "${5:?auth filters}" ;;
  *) echo "usage: $0 start|stop|env [DIR] | proxy-conf DIR PORT LOG_NAME AUTH_FILTERS" >&2; exit 2 ;;
esac
