# shellcheck shell=bash
# lib.sh: what the test-server scripts share. Sourced, not run; the
# sourcing script defines say and fail.

# apt_install LOG PACKAGE...: installs the packages that are missing (as
# root), with a policy-rc.d in place so that their maintainer scripts
# cannot start system-wide daemons on public ports. apt's output goes to
# LOG; on failure its tail is shown.
apt_install() {
  local log=$1; shift
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  [ "$(id -u)" = 0 ] || fail "packages missing: ${missing[*]} (run as root to have them installed)"
  say "installing ${missing[*]}"
  local made_policy=0 rc=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600)
  # The package lists may be missing or stale: update once and retry.
  { "${install[@]}" "${missing[@]}" || { apt-get update -q && "${install[@]}" "${missing[@]}"; }; } > "$log" 2>&1 || rc=$?
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  if [ $rc != 0 ]; then
    tail -20 "$log" >&2
    fail "apt-get failed (log $log)"
  fi
}

# started_with PID VAR=VALUE: the process PID exists and has VAR=VALUE in
# its environment. The scripts start their servers with such a mark, so
# they stop only what they started, never a process found by name.
started_with() {
  [ -n "${1:-}" ] && [ -r "/proc/$1/environ" ] && { tr '\0' '\n' < "/proc/$1/environ"; } 2>/dev/null | grep -qxF "$2"
}
