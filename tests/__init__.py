"""Beacon test suite."""
