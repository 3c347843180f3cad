"""Benchmarks run side by side against a baseline (`python -m bench.<name>`); never imported by the app."""
