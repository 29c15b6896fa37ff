//go:build race

package service_test

// policyYearMonths is how much of 2026 TestPolicyYear fires: under the
// race detector (which slows the catalog's SQLite tenfold) the first
// quarter, through the spring change; test.sh also runs the whole year
// without it.
const policyYearMonths = 3
