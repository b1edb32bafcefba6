"""DonkeyCar's datastore v2, emulated at the file level, for tests/test_tub.py.

:class:`DonkeyTub` replays, operation by operation, what DonkeyCar's writer does to the files
of a tub (autorope/donkeycar: ``donkeycar/parts/datastore_v2.py`` at 1e831b81, ``Manifest``,
``Catalog``, ``CatalogMetadata``, ``Seekable``; ``donkeycar/parts/tub_v2.py`` at 38a1c2db,
``Tub.write_record``): each write appends one catalog line (``json.dumps(sort_keys=True)`` +
``"\\n"``) and then rewrites the catalog's ``.catalog_manifest`` and line 5 of
``manifest.json``; a catalog is added when the index reaches a multiple of ``max_len``;
a delete rewrites line 5; closing a session that wrote records rewrites line 4 (the
sessions) and appends line 5 again; reopening reads the five lines back and starts the next
session. It also does what a crash leaves: a record line without its newline (power lost
mid-write) and a record whose manifest update never happened. It is written independently
of ``sim.dataset.tub_format`` so that the two can be compared byte for byte.

:func:`donkey_read` is DonkeyCar's reader (``Tub(path, read_only=True)`` iterated, as its
trainer does) reduced to its logic: what it requires of the files and the records it yields.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


class DonkeyTub:
    """A tub written the way DonkeyCar writes one. Times are passed in (seconds)."""

    def __init__(
        self,
        root: Path,
        inputs: list[str],
        types: list[str],
        metadata: list[tuple[str, Any]] = (),
        *,
        max_len: int = 1000,
        now: float,
    ) -> None:
        self.root = Path(root)
        self.inputs, self.types = list(inputs), list(types)
        self.max_len = max_len
        self.mpath = self.root / "manifest.json"
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "images").mkdir(exist_ok=True)
        # Manifest.__init__ for a new tub: lines 1-5, then the first catalog
        self.metadata = dict(metadata)
        self.manifest_metadata: dict[str, Any] = {"created_at": now}
        self.paths: list[str] = []
        self.current_index = 0
        self.deleted: set[int] = set()
        self.lines = [json.dumps(x) for x in (inputs, types, self.metadata)]
        self.lines.append(json.dumps(self.manifest_metadata))
        self._write_line5()
        self._add_catalog(now)
        self._new_session(now)

    # ------------------------------------------------------------------ files
    def _save_manifest(self) -> None:
        self.mpath.write_text("".join(line + "\n" for line in self.lines))

    def _write_line5(self) -> None:
        line5 = {
            "paths": self.paths,
            "current_index": self.current_index,
            "max_len": self.max_len,
            "deleted_indexes": list(self.deleted),
        }
        self.lines = self.lines[:4] + [json.dumps(line5)]
        self._save_manifest()

    def _catalog_meta(self) -> None:
        stem = self.paths[-1][: -len(".catalog")]
        meta = {
            "path": f"{stem}.catalog_manifest",
            "created_at": self.cat_created,
            "start_index": self.cat_start,
            "line_lengths": self.cat_lengths,
        }
        (self.root / f"{stem}.catalog_manifest").write_text(
            json.dumps(meta, allow_nan=False, sort_keys=True) + "\n"
        )

    def _add_catalog(self, now: float) -> None:
        name = f"catalog_{len(self.paths)}.catalog"
        self.paths.append(name)
        self.cat_created, self.cat_start, self.cat_lengths = now, self.current_index, []
        self._catalog_meta()
        (self.root / name).touch()
        self._write_line5()

    def _new_session(self, now: float) -> None:
        sessions = self.manifest_metadata.get("sessions", {})
        last = -1
        if sessions:
            last = sessions["last_id"]
        else:
            sessions["all_full_ids"] = []
        this = last + 1
        full = time.strftime("%y-%m-%d", time.localtime(now)) + "_" + str(this)
        sessions["last_id"] = this
        sessions["last_full_id"] = full
        sessions["all_full_ids"].append(full)
        self.manifest_metadata["sessions"] = sessions
        self.session_id = full
        self.wrote = False

    # ------------------------------------------------------------ operations
    def write_record(self, record: dict[str, Any], now: float) -> int:
        """Tub.write_record at time ``now``: images saved, private fields added."""
        types = dict(zip(self.inputs, self.types, strict=True))
        contents: dict[str, Any] = {}
        for key, value in record.items():
            if value is None or key not in types:
                continue
            kind = types[key]
            if kind == "float":
                contents[key] = float(value)
            elif kind == "str":
                contents[key] = value
            elif kind == "int":
                contents[key] = int(value)
            elif kind == "boolean":
                contents[key] = bool(value)
            elif kind == "image_array":
                name = "_".join([str(self.current_index), key.replace("/", "_"), ".jpg"])
                Image.fromarray(np.uint8(value)).save(self.root / "images" / name)
                contents[key] = name
        contents["_timestamp_ms"] = int(round(now * 1000))
        contents["_index"] = self.current_index
        contents["_session_id"] = self.session_id
        if self.current_index > 0 and self.current_index % self.max_len == 0:
            self._add_catalog(now)
        line = json.dumps(contents, allow_nan=False, sort_keys=True) + "\n"
        with open(self.root / self.paths[-1], "a") as f:
            f.write(line)
        self.cat_lengths.append(len(line))
        self._catalog_meta()
        self.current_index += 1
        self._write_line5()
        self.wrote = True
        return self.current_index - 1

    def delete_records(self, indexes: set[int] | int) -> None:
        self.deleted.update({indexes} if isinstance(indexes, int) else indexes)
        self._write_line5()

    def close(self) -> None:
        if self.wrote:  # Manifest.close: line 4 updated, line 5 written after it again
            self.lines = self.lines[:3] + [json.dumps(self.manifest_metadata), self.lines[4]]
            self._save_manifest()

    def reopen(self, now: float) -> None:
        """A new drive on the same tub (Manifest.__init__ on an existing manifest)."""
        lines = self.mpath.read_text().split("\n")
        self.lines = lines[:5]
        self.manifest_metadata = json.loads(lines[3])
        line5 = json.loads(lines[4])
        self.paths, self.current_index = line5["paths"], line5["current_index"]
        self.deleted = set(line5["deleted_indexes"])
        meta = json.loads((self.root / self.paths[-1]).with_suffix(".catalog_manifest").read_text())
        self.cat_created, self.cat_start = meta["created_at"], meta["start_index"]
        self.cat_lengths = meta["line_lengths"]
        self._new_session(now)

    def crash_mid_record(self, record: dict[str, Any], now: float, keep: int = 25) -> None:
        """Power lost while the catalog line of ``record`` was written: only its first
        ``keep`` characters reach the file; nothing else is updated."""
        contents = {k: v for k, v in record.items() if k != "cam/image_array"}
        contents |= {"_timestamp_ms": int(round(now * 1000)), "_index": self.current_index}
        line = json.dumps(contents, sort_keys=True)
        with open(self.root / self.paths[-1], "a") as f:
            f.write(line[:keep])

    def crash_after_catalog(self, record: dict[str, Any], now: float) -> None:
        """Power lost after the catalog line was written, before the manifest knew of it."""
        saved = (list(self.lines), self.current_index)
        self.write_record(record, now)
        self.lines, self.current_index = saved
        self._save_manifest()


def donkey_read(root: Path, on_ignored: Callable[[int], None] | None = None) -> list[dict]:
    """The records DonkeyCar's ``Tub(root, read_only=True)`` yields, with what it requires
    of the files checked (a read-only Seekable memory-maps each file, so none may be empty;
    the session bookkeeping needs ``last_id`` once ``sessions`` exist)."""
    root = Path(root)
    lines = (root / "manifest.json").read_bytes().split(b"\n")
    inputs, types, metadata, mmeta, line5 = (json.loads(lines[i].rstrip(b"\r")) for i in range(5))
    assert isinstance(inputs, list) and isinstance(types, list) and len(inputs) == len(types)
    assert isinstance(metadata, dict)
    if mmeta.get("sessions"):
        assert isinstance(mmeta["sessions"]["last_id"], int)
        assert isinstance(mmeta["sessions"]["all_full_ids"], list)
    paths, deleted = line5["paths"], set(line5["deleted_indexes"])
    assert paths, "a read-only Manifest with no catalogs tries to write one"
    assert isinstance(line5["current_index"], int) and isinstance(line5["max_len"], int)
    out: list[dict] = []
    index = 0
    for name in paths:
        catalog = root / name
        cmeta = catalog.with_suffix(".catalog_manifest")
        assert os.path.getsize(cmeta) > 0 and os.path.getsize(catalog) > 0  # mmap'ed
        meta = json.loads(cmeta.read_bytes().split(b"\n")[0])
        assert isinstance(meta["line_lengths"], list)
        for raw in catalog.read_bytes().split(b"\n"):
            text = raw.rstrip(b"\r")
            if not text:
                break
            i = index
            index += 1
            if i in deleted:
                continue
            try:
                out.append(json.loads(text))
            except ValueError:
                if on_ignored:
                    on_ignored(i)  # DonkeyCar prints "Ignoring record at index i"
    return out


def donkey_image(root: Path, record: dict) -> np.ndarray:
    """``TubRecord.image()``: the record's camera image, as DonkeyCar's trainer loads it."""
    with Image.open(Path(root) / "images" / record["cam/image_array"]) as im:
        return np.asarray(im.convert("RGB"))
