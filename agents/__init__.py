"""Pilots and the closed loop they drive in.

- ``base``: the ``Pilot`` protocol, ``PilotNeeds`` (what a pilot needs from the env),
  checkpoint formats; ``registry``: from a spec (``expert``, a checkpoint, an SB3 run)
  to a pilot; ``loop``: the one closed loop (latency schedule, interventions, metrics).
- One module per pilot kind: ``expert`` (privileged pure pursuit), ``classical`` (edge
  filters), ``cnn`` + ``models`` (behaviour-cloning CNNs), ``sb3_pilot``
  (stable-baselines3 policies), ``human`` (keyboard and gamepad).
"""
