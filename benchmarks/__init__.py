"""Benchmarks: scripts that print numbers and write them into docs/benchmarks.md."""
