"""On-disk dataset format for recorded laps: episode files + one manifest.

Layout::

    DIR/
      manifest.json                      # the only index: an episode exists iff it is listed here
      episodes/ep-<key>.safetensors      # per-frame arrays; episode metadata in __metadata__

Format version 2 (:data:`SCHEMA_VERSION`) stores every frame field zstd-compressed inside the
episode file, losslessly (:mod:`~sim.dataset.codec`: ~100x smaller for rendered frames), and
says how each episode ended (:data:`ENDINGS`). Version-1 files (raw arrays) are still read,
also listed in a version-2 manifest; ``python -m sim.dataset migrate`` rewrites them.

Guarantees:

- Crash safety. An episode file is written to a temp file, fsynced and renamed into place, and
  only then listed in the manifest (itself replaced atomically, under a file lock). A recorder
  killed at any moment leaves a dataset that opens, with every completed episode intact; the
  partial one is absent, at worst leaving a temp file or an unlisted episode file that
  :func:`validate_dataset` reports as a warning and the next :class:`DatasetWriter` tidies up.
- Nothing recorded is deleted. Each episode file carries the sha256 of its own data in its
  header (:data:`CONTENT_SHA_KEY`); a writer lists again an unlisted file that is a complete,
  intact episode (a killed recorder's, or one a restored or merged manifest lacks) and moves
  any other unlisted episode file, and a listed one :meth:`DatasetWriter.repair` finds
  damaged, to ``quarantine/``. Only temp files of writers no longer running are removed.
- Verified loading. Every load (:meth:`Dataset.load_arrays`, :meth:`Dataset.load_episode`)
  checks each file's sha256 against the manifest unless ``verify=False``; a damaged file is a
  one-line :class:`DatasetError` naming it.
- Safe loading. Files are parsed as safetensors (a JSON header plus raw little-endian arrays);
  nothing is ever unpickled, and every header is checked against :data:`FRAME_FIELDS` before
  a byte of data is trusted.
- Limits. The manifest and episode headers are bounded (file and header size, episodes,
  frames per episode, image sides, JSON nesting, string lengths, the bytes a file's fields
  decode to: the ``MAX_*`` constants of :mod:`~sim.dataset.format`), all checked before
  anything is allocated or decompressed; each breach is a one-line :class:`DatasetError`
  naming the file and the limit, and the writer refuses to write past them.
- Self-description. The manifest's ``info`` block (env id and version, pybullet version,
  renderer, camera, rates...) is fixed at creation; appending with an incompatible camera,
  control rate or renderer is refused.

CLI: ``python -m sim.dataset {info,validate,bench,view,migrate,filter,merge,import-tub,export-tub} ...``.

Modules, one job each; import from ``sim.dataset`` itself, which re-exports every module's
``__all__`` (``manifest`` and ``episode_file`` are internal):

- :mod:`~sim.dataset.format`: names, schema version, limits, :class:`DatasetError`,
  :class:`EpisodeMeta`;
- :mod:`~sim.dataset.frames`: the frame schema (:data:`FRAME_FIELDS`) and what recorders
  derive from it (:func:`append_frame`, :func:`frames_to_arrays`);
- :mod:`~sim.dataset.manifest`: reading and checking ``manifest.json``;
- :mod:`~sim.dataset.codec`: the compression of frame fields (version 2);
- :mod:`~sim.dataset.episode_file`: safetensors headers of both versions, reads and decodes
  into preallocated arrays;
- :mod:`~sim.dataset.reader`: :func:`open_dataset`, :class:`Dataset`;
- :mod:`~sim.dataset.writer`: :class:`DatasetWriter`;
- :mod:`~sim.dataset.validate`: :func:`validate_dataset`;
- :mod:`~sim.dataset.summary`: :func:`dataset_summary`, :func:`dataset_fingerprint`;
- :mod:`~sim.dataset.synthetic`: :func:`synthetic_episode`;
- :mod:`~sim.dataset.tub_format`: DonkeyCar's tub format (datastore v2), read and written;
- :mod:`~sim.dataset.tub`: DonkeyCar tubs in and out: the settings, what they mean;
  :mod:`~sim.dataset.tub_import` (:func:`import_tub`), :mod:`~sim.dataset.tub_export`
  (:func:`export_tub`);
- :mod:`~sim.dataset.view`: :func:`write_view` (episodes as an MP4, labels drawn over);
- :mod:`~sim.dataset.migrate`: :func:`migrate_dataset` (version 1 -> 2, in place or not);
- :mod:`~sim.dataset.derive`: :func:`filter_dataset`, :func:`merge_datasets`;
- :mod:`~sim.dataset.bench` and :mod:`~sim.dataset.cli`: the command line.
"""

# Each module's __all__ is its public API; the package re-exports all of them.
from sim.dataset import (
    bench,
    cli,
    codec,
    derive,
    format,
    frames,
    migrate,
    reader,
    summary,
    synthetic,
    tub,
    tub_export,
    tub_format,
    tub_import,
    validate,
    view,
    writer,
)
from sim.dataset.bench import *  # noqa: F403
from sim.dataset.cli import *  # noqa: F403
from sim.dataset.codec import *  # noqa: F403
from sim.dataset.derive import *  # noqa: F403
from sim.dataset.format import *  # noqa: F403
from sim.dataset.frames import *  # noqa: F403
from sim.dataset.migrate import *  # noqa: F403
from sim.dataset.reader import *  # noqa: F403
from sim.dataset.summary import *  # noqa: F403
from sim.dataset.synthetic import *  # noqa: F403
from sim.dataset.tub import *  # noqa: F403
from sim.dataset.tub_export import *  # noqa: F403
from sim.dataset.tub_format import *  # noqa: F403
from sim.dataset.tub_import import *  # noqa: F403
from sim.dataset.validate import *  # noqa: F403
from sim.dataset.view import *  # noqa: F403
from sim.dataset.writer import *  # noqa: F403

__all__ = [
    *format.__all__,
    *codec.__all__,
    *frames.__all__,
    *reader.__all__,
    *writer.__all__,
    *validate.__all__,
    *summary.__all__,
    *synthetic.__all__,
    *tub_format.__all__,
    *tub.__all__,
    *tub_import.__all__,
    *tub_export.__all__,
    *view.__all__,
    *migrate.__all__,
    *derive.__all__,
    *bench.__all__,
    *cli.__all__,
]
