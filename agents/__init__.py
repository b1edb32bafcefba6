"""Pilots and the closed loop they drive in.

- ``base``: the ``Pilot`` protocol, checkpoint formats; ``needs``: ``PilotNeeds`` (what a
  pilot needs from the env) and ``as_action``, numpy only (re-exported by ``base``);
  ``registry``: from a spec (``expert``, a checkpoint, an SB3 run, an ``.onnx``) to a pilot; ``loop``: the one closed loop (latency schedule, interventions, metrics).
- One module per pilot kind: ``expert`` (privileged pure pursuit), ``classical`` (edge
  filters), ``cnn`` + ``models`` (behaviour-cloning CNNs), ``sb3_pilot``
  (stable-baselines3 policies), ``human`` (keyboard and gamepad), ``onnx_pilot`` (models
  exported by ``export``, run with onnxruntime: numpy and onnxruntime only, for the car).
"""
