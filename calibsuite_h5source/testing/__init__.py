"""Helpers for tests: declared runs written in any layout, synthetic runs, a pytest plugin."""
