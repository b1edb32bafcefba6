"""Judging pilots: latency, closed-loop runs, result rows, the leaderboard and its reports.

- ``latency``: latency settings and batch-1 profiling; ``profile``: ``python -m
  evaluation.profile``, the latency profile measured on the car (numpy and onnxruntime
  only for ``.onnx`` pilots) and its reader ``read_profile``; ``runner``: closed-loop runs of
  one pilot (built on ``agents.loop.ClosedLoop``), many in the pool, latency sweeps;
  ``pilots``: pilot specs (over ``agents.registry``); ``evaluate``: ``python -m
  evaluation.evaluate`` and its in-process API; ``results``: ``ResultRow``; ``video``.
- ``store``: the SQLite leaderboard store; ``report``: ranking and reports (``python -m
  evaluation.report``).
- The main job, an app (``python -m evaluation.leaderboard``): ``presets`` (the zoo and
  its settings per preset), ``zoo`` (record the dataset, train the zoo), ``story`` (the
  checks the board must pass), ``leaderboard`` (evaluate, write, the command line).

Importing the package imports none of them (no side effects).
"""
