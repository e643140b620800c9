"""The paper-claims benchmark (``benchmarks/reproduce.py``): job list, runners, tables and figures."""
