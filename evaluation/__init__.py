"""Judging pilots: offline metrics, latency, the closed-loop runner, the leaderboard.

- ``latency``: latency settings and batch-1 profiling; ``runner``: the latency-aware
  closed-loop runner; ``pilots``: pilot specs; ``evaluate``: ``python -m
  evaluation.evaluate`` and its in-process API; ``results``: ``ResultRow``.
- ``store``: the SQLite leaderboard store; ``report``: ranking and reports (``python -m
  evaluation.report``); ``leaderboard``: the main job (``python -m evaluation.leaderboard``).

Importing the package imports none of them (no side effects).
"""
