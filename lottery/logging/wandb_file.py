"""Read a W&B run's transaction log (``run-<id>.wandb``) with no server and no W&B reader.

W&B writes every run, online or offline, to an append-only log in its run folder
(``<dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb``); ``wandb sync`` uploads that file.
wandb 0.31 ships no reader for it, so this module reads it, for tests and for inspecting
offline runs. The format is LevelDB's log format with W&B's own file header:

* **File header**, 7 bytes: the identifier ``b":W&B"``, the magic number ``0xBEE1``
  (2 bytes, little-endian) and a version byte (0).
* **Blocks** of 32 KiB (32768 bytes) follow; the header counts towards the first block.
  A block holds **chunks**, each a 7-byte chunk header — CRC-32 (4 bytes LE), payload
  length (2 bytes LE), chunk type (1 byte) — then the payload. The CRC is zlib's CRC-32
  of the payload seeded with the CRC-32 of the type byte, as in LevelDB (unmasked).
* A chunk never crosses a block boundary: a record longer than the space left is split into
  a ``FIRST`` chunk, ``MIDDLE`` chunks and a ``LAST`` chunk; one that fits is a single
  ``FULL`` chunk. When fewer than 7 bytes remain in a block they are zero padding.
* Each reassembled **record** is a serialized protobuf ``wandb.proto.wandb_internal_pb2.Record``
  (it ships with wandb): ``header``, ``run`` (id, project, group, name and the initial config),
  ``config`` (later config updates), ``metric`` (``define_metric``), ``history`` (one
  ``run.log`` row, items with JSON values), ``summary``, ``files``, ``exit``, ...

Values are JSON; an item names its key either by ``key`` or by ``nested_key`` (a path into
nested dictionaries). :func:`read_run` gathers the records into plain Python values.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

FILE_IDENT = b":W&B"
FILE_MAGIC = 0xBEE1
FILE_HEADER = struct.Struct("<4sHB")  # ident, magic, version: 7 bytes
CHUNK_HEADER = struct.Struct("<IHB")  # crc32, length, type: 7 bytes
BLOCK_SIZE = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _crc(chunk_type: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(bytes([chunk_type]))) & 0xFFFFFFFF


def iter_payloads(path: str | Path) -> Iterator[bytes]:
    """The raw records of a ``.wandb`` file, chunks reassembled and checksums verified.

    A record cut short at the end of the file (a run still writing, or killed) ends the
    iteration; a bad header, checksum or chunk order raises :class:`ValueError`.
    """
    data = Path(path).read_bytes()
    if len(data) < FILE_HEADER.size:
        raise ValueError(f"{path}: too short for a W&B transaction log")
    ident, magic, version = FILE_HEADER.unpack_from(data, 0)
    if ident != FILE_IDENT or magic != FILE_MAGIC:
        raise ValueError(f"{path}: not a W&B transaction log (header {data[:7]!r})")
    if version != 0:
        raise ValueError(f"{path}: unsupported W&B log version {version}")
    pos = FILE_HEADER.size
    pending: bytes | None = None
    while pos < len(data):
        left = BLOCK_SIZE - pos % BLOCK_SIZE
        if left < CHUNK_HEADER.size:  # block trailer: zero padding
            pos += left
            continue
        if pos + CHUNK_HEADER.size > len(data):
            return
        crc, length, chunk_type = CHUNK_HEADER.unpack_from(data, pos)
        start = pos + CHUNK_HEADER.size
        if chunk_type == 0 and length == 0:  # zero-filled rest of a block
            pos += left
            continue
        if start + length > len(data):
            return
        payload = data[start : start + length]
        if _crc(chunk_type, payload) != crc:
            raise ValueError(f"{path}: checksum mismatch in the chunk at byte {pos}")
        pos = start + length
        if chunk_type == FULL and pending is None:
            yield payload
        elif chunk_type == FIRST and pending is None:
            pending = payload
        elif chunk_type == MIDDLE and pending is not None:
            pending += payload
        elif chunk_type == LAST and pending is not None:
            yield pending + payload
            pending = None
        else:
            raise ValueError(f"{path}: chunk of type {chunk_type} out of order at byte {pos}")


def iter_records(path: str | Path) -> Iterator[wandb_internal_pb2.Record]:
    """The protobuf records of a ``.wandb`` file, in the order they were written."""
    for payload in iter_payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def _key(item: Any) -> list[str]:
    return list(item.nested_key) if item.nested_key else [item.key]


def _apply(target: dict[str, Any], items: Any) -> None:
    """Set JSON values into a nested dictionary at each item's key path."""
    for item in items:
        *parents, last = _key(item)
        node = target
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = json.loads(item.value_json)


def _remove(target: dict[str, Any], items: Any) -> None:
    for item in items:
        *parents, last = _key(item)
        node = target
        for name in parents:
            node = node.get(name, {})
        node.pop(last, None)


@dataclass
class WandbRun:
    """What a ``.wandb`` file says about its run, as plain values."""

    run_id: str = ""
    project: str = ""
    entity: str = ""
    group: str = ""
    name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    # define_metric calls: {"name" or "glob_name": ..., "step_metric": ...}
    metrics: list[dict[str, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    exit_code: int | None = None

    def rows_with(self, *keys: str) -> list[dict[str, Any]]:
        """The history rows that have every one of ``keys``."""
        return [row for row in self.history if all(k in row for k in keys)]


def read_run(path: str | Path) -> WandbRun:
    """Gather a ``.wandb`` file's records: config (``_wandb`` included), history, summary.

    History rows are flat dictionaries keyed as logged (``"test/accuracy"``; a nested
    dictionary's keys joined by ``"."``), with W&B's own ``_step``, ``_runtime`` and
    ``_timestamp``.
    """
    run = WandbRun()
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.entity = r.run_id, r.project, r.entity
            run.group, run.name = r.run_group, r.display_name
            _apply(run.config, r.config.update)
        elif kind == "config":
            _apply(run.config, record.config.update)
            _remove(run.config, record.config.remove)
        elif kind == "history":
            run.history.append(
                {".".join(_key(item)): json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "summary":
            _apply(run.summary, record.summary.update)
            _remove(run.summary, record.summary.remove)
        elif kind == "metric":
            m = record.metric
            entry = {"name": m.name} if m.name else {"glob_name": m.glob_name}
            if m.step_metric:
                entry["step_metric"] = m.step_metric
            run.metrics.append(entry)
        elif kind == "files":
            run.files.extend(f.path for f in record.files.files)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run
