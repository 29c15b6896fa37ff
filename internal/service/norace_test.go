//go:build !race

package service_test

// policyYearMonths is how much of 2026 TestPolicyYear fires: all of it.
const policyYearMonths = 12
