"""On-disk dataset format for recorded laps: episode files + one manifest.

Layout::

    DIR/
      manifest.json                      # the only index: an episode exists iff it is listed here
      episodes/ep-<key>.safetensors      # per-frame arrays; episode metadata in __metadata__

Guarantees:

- Crash safety. An episode file is written to a temp file, fsynced and renamed into place, and
  only then listed in the manifest (itself replaced atomically, under a file lock). A recorder
  killed at any moment leaves a dataset that opens, with every completed episode intact; the
  partial one is absent, at worst leaving a temp/orphan file that :func:`validate_dataset`
  reports as a warning and the next :class:`DatasetWriter` removes.
- Safe loading. Files are parsed as safetensors (a JSON header plus raw little-endian arrays);
  nothing is ever unpickled, and every header is checked against :data:`FRAME_FIELDS` before
  a byte of data is trusted.
- Self-description. The manifest's ``info`` block (env id and version, pybullet version,
  renderer, camera, rates...) is fixed at creation; appending with an incompatible camera,
  control rate or renderer is refused.

CLI: ``python -m sim.dataset {info,validate,bench} ...``.

Modules, one job each (import from ``sim.dataset``; the names below are its API):

- :mod:`~sim.dataset.format`: names, schema version, limits, :class:`DatasetError`,
  :class:`EpisodeMeta`;
- :mod:`~sim.dataset.frames`: the frame schema (:data:`FRAME_FIELDS`) and what recorders
  derive from it (:func:`append_frame`, :func:`frames_to_arrays`);
- :mod:`~sim.dataset.manifest`: reading and checking ``manifest.json``;
- :mod:`~sim.dataset.episode_file`: safetensors headers, reads into preallocated arrays;
- :mod:`~sim.dataset.reader`: :func:`open_dataset`, :class:`Dataset`;
- :mod:`~sim.dataset.writer`: :class:`DatasetWriter`;
- :mod:`~sim.dataset.validate`: :func:`validate_dataset`;
- :mod:`~sim.dataset.summary`: :func:`dataset_summary`, :func:`dataset_fingerprint`;
- :mod:`~sim.dataset.synthetic`: :func:`synthetic_episode`;
- :mod:`~sim.dataset.bench` and :mod:`~sim.dataset.cli`: the command line.
"""

from sim.dataset.cli import main
from sim.dataset.format import (
    DIRECTIONS,
    EPISODE_METADATA_KEY,
    EPISODES_DIRNAME,
    FORMAT_NAME,
    INFO_COMPAT_FIELDS,
    LOCK_NAME,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    DatasetError,
    EpisodeMeta,
    is_warning,
)
from sim.dataset.frames import (
    FRAME_DTYPES,
    FRAME_FIELDS,
    FRAME_KEYS,
    LABEL_FIELDS,
    append_frame,
    frames_to_arrays,
)
from sim.dataset.reader import Dataset, open_dataset
from sim.dataset.summary import dataset_fingerprint, dataset_summary
from sim.dataset.synthetic import synthetic_episode
from sim.dataset.validate import validate_dataset
from sim.dataset.writer import DatasetWriter

__all__ = [
    "DIRECTIONS",
    "EPISODES_DIRNAME",
    "EPISODE_METADATA_KEY",
    "FORMAT_NAME",
    "FRAME_DTYPES",
    "FRAME_FIELDS",
    "FRAME_KEYS",
    "INFO_COMPAT_FIELDS",
    "LABEL_FIELDS",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "Dataset",
    "DatasetError",
    "DatasetWriter",
    "EpisodeMeta",
    "append_frame",
    "dataset_fingerprint",
    "dataset_summary",
    "frames_to_arrays",
    "is_warning",
    "main",
    "open_dataset",
    "synthetic_episode",
    "validate_dataset",
]
