"""Helpers the test suites share (process launching, health waiting)."""
