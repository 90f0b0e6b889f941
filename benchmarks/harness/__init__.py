"""Shared parts of the benchmarks: assets, models and data, the comparison runner's arena,
methods, analyses, ranking statistics and report rendering. Entry commands are the scripts in
``benchmarks/`` (``compare.py``, ``apply_check.py``, ...), which put this folder's parent on
``sys.path``."""
