"""Helpers of the security suites (no tests here)."""
