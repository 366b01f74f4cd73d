"""Benchmarks: every figure measured in one run beside a baseline from the same run."""
