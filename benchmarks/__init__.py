"""Benchmarks of cctrnet against other tools; see benchmarks/README.md."""
