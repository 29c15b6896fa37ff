#!/usr/bin/env bash
# scripts/layers.sh: fails when a package imports one of a higher layer,
# or when code other than tests imports a test-support package. test.sh
# runs it; docs/ARCHITECTURE.md explains the layers.
#
# Each line of the table is a rank and the packages (path patterns under
# the module; * matches one path element) at that rank. A package may
# import only packages of a LOWER rank: peers do not import each other.
# A package that matches no line fails the check, so a new package must
# be placed here.
set -euo pipefail
cd "$(dirname "$0")/.."

table='
100 cmd/* bench/*
90  internal/api internal/client
80  internal/service
70  internal/tasks internal/volbackup internal/notify internal/metrics
70  internal/catalog/sqlite internal/catalog/postgres
65  internal/catalog/sqlstore
60  internal/repo internal/volumectl
55  internal/repo/format internal/objstore/s3 internal/objstore/swift
50  internal/objstore/retry internal/objstore/local internal/objstore/mem
50  internal/objstore/metered internal/objstore/faulty internal/objstore/limit
50  internal/catalog internal/blockdev internal/dbhost internal/keystone
45  internal/dbagent/postgres internal/dbagent/mariadb
40  internal/dbagent
40  internal/objstore internal/nbd internal/volume internal/attach
40  internal/crypto internal/extents internal/directio internal/pgwal internal/binlog
30  internal/schedule internal/retention
10  internal/wire
0   .
'

# Packages that may reach only the layers named here, not everything
# below them: the API speaks to the use cases, never to the catalog or
# the engine; the client knows only the wire types.
only='
internal/api internal/service internal/wire .
internal/client internal/wire .
'

# Test-support packages: only tests and other test-support packages may
# import them.
testsupport='internal/testenv internal/*/*test internal/*/*/*test internal/*/*/*/*test'

module=$(go list -m)

go list -f '{{.ImportPath}} {{join .Imports " "}}' ./... | awk -v module="$module" -v table="$table" -v testsupport="$testsupport" -v only="$only" '
function rel(p) {
  if (p == module) return "."
  return substr(p, length(module) + 2)
}
function glob(p) { gsub(/\./, "\\.", p); gsub(/\*/, "[^/]*", p); return "^" p "$" }
function rank(p,   i) {
  for (i = 1; i <= npat; i++) if (p ~ pat[i]) return prank[i]
  return ""
}
function support(p,   i) {
  for (i = 1; i <= nsup; i++) if (p ~ sup[i]) return 1
  return 0
}
BEGIN {
  n = split(table, lines, "\n")
  for (l = 1; l <= n; l++) {
    m = split(lines[l], f, " ")
    for (i = 2; i <= m; i++) { npat++; pat[npat] = glob(f[i]); prank[npat] = f[1] }
  }
  n = split(only, lines, "\n")
  for (l = 1; l <= n; l++) {
    m = split(lines[l], f, " ")
    for (i = 2; i <= m; i++) allowed[f[1], f[i]] = 1
    if (m > 0) restricted[f[1]] = 1
  }
  m = split(testsupport, f, " ")
  for (i = 1; i <= m; i++) sup[++nsup] = glob(f[i])
}
{
  pkg = rel($1)
  if (support(pkg)) next
  r = rank(pkg)
  if (r == "") { print "layers: package " pkg " has no layer: add it to the table in scripts/layers.sh"; bad = 1; next }
  for (i = 2; i <= NF; i++) {
    if ($i != module && index($i, module "/") != 1) continue
    imp = rel($i)
    if (support(imp)) { print "layers: " pkg " imports the test-support package " imp " outside tests"; bad = 1; continue }
    ir = rank(imp)
    if (ir == "") continue # reported when that package is listed itself
    if ((pkg in restricted) && !((pkg, imp) in allowed)) { print "layers: " pkg " imports " imp ": it may import only what scripts/layers.sh lists for it"; bad = 1; continue }
    if (ir + 0 >= r + 0) { print "layers: " pkg " (layer " r ") imports " imp " (layer " ir "): a package imports only lower layers"; bad = 1 }
  }
}
END {
  if (bad) exit 1
  print "layers: every import points down"
}'
