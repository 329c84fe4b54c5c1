"""An on-disk format for unstructured tickets: only the alive weights, and where they are.

A ticket at 90% sparsity stored densely is 90% zeros. Here each parameter leaf is stored in
whichever of three encodings is smallest *before* compression (a cheap, good proxy for after):

- ``dense``: every value (what a fully alive leaf, such as a bias, always gets);
- ``bitmap``: one bit per entry (``np.packbits`` of the mask) plus the alive values;
- ``gaps``: for each alive entry, how many dead entries precede it since the previous alive
  one, in the smallest unsigned integer type that holds the largest gap, plus the alive values.

Gaps (delta-encoded indices) beat flat indices (4 bytes each) at any sparsity: at 90% the
gaps mostly fit a byte; the bitmap wins over the gaps once more than about 1 entry in 8 is
alive and the gaps need a byte (``size / 8`` bytes against ``alive`` bytes). The arrays go into
a compressed ``.npz`` with a small JSON header; values keep their dtype and their bits exactly
(dtypes NumPy cannot store, such as bfloat16, are stored as unsigned integers of the same
width). Pruned entries come back as +0.0, as :func:`lottery.pruning.apply_mask` makes them.

The file is written atomically (a temp file in the same folder, then ``os.replace``): a job
killed mid-write leaves the previous file, or none, under the final name, never a torn one.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np

from lottery.atomic import atomic_write_bytes
from lottery.pruning.mask import Mask, flatten, unflatten

FORMAT = "lottery-sparse"
VERSION = 1
_HEADER = "header"


def _raw(values: np.ndarray) -> np.ndarray:
    """``values`` as NumPy can store them bit for bit: extension dtypes as unsigned ints."""
    return values.view(f"u{values.dtype.itemsize}") if values.dtype.kind == "V" else values


def _dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:  # bfloat16 and friends live in ml_dtypes (a dependency of JAX)
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))


def _encode(value: np.ndarray, alive: np.ndarray) -> tuple[str, dict[str, np.ndarray]]:
    """The smallest encoding of one leaf: its name and its arrays."""
    flat, keep = value.reshape(-1), alive.reshape(-1)
    if keep.all():
        return "dense", {"values": _raw(flat)}
    index = np.flatnonzero(keep)
    gaps = np.diff(index, prepend=-1) - 1
    gaps = gaps.astype(np.min_scalar_type(int(gaps.max(initial=0))))
    bitmap_bytes = -(-keep.size // 8)
    values = _raw(flat[index])
    sizes = {"dense": flat.nbytes, "bitmap": bitmap_bytes + values.nbytes}
    sizes["gaps"] = gaps.nbytes + values.nbytes
    encoding = min(sizes, key=sizes.__getitem__)  # ties keep the first: dense, then bitmap
    if encoding == "dense":
        return "dense", {"values": _raw(np.where(keep, flat, np.zeros_like(flat)))}
    if encoding == "bitmap":
        return "bitmap", {"bitmap": np.packbits(keep), "values": values}
    return "gaps", {"gaps": gaps, "values": values}


def _decode(leaf: dict[str, Any], arrays: Any, key: str) -> np.ndarray:
    """One leaf, dense, from its header entry and its arrays (``key`` prefixes their names)."""
    dtype, shape = _dtype(leaf["dtype"]), tuple(leaf["shape"])
    values = arrays[f"{key}.values"].view(dtype)
    if leaf["encoding"] == "dense":
        return values.reshape(shape)
    out = np.zeros(int(np.prod(shape)), dtype)
    if leaf["encoding"] == "bitmap":
        out[np.unpackbits(arrays[f"{key}.bitmap"], count=out.size).astype(bool)] = values
    elif leaf["encoding"] == "gaps":
        out[np.cumsum(arrays[f"{key}.gaps"].astype(np.int64) + 1) - 1] = values
    else:
        raise ValueError(f"unknown encoding {leaf['encoding']!r} for {leaf['path']}")
    return out.reshape(shape)


def _npz_bytes(arrays: dict[str, np.ndarray], compressed: bool) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def save_sparse(path: str | os.PathLike, params: Any, mask: Mask) -> int:
    """Write ``params`` with only the entries ``mask`` keeps; the number of bytes written.

    ``mask`` must have the params' leaves and shapes. Values at pruned entries are dropped
    (they load as +0.0); alive values are stored exactly.
    """
    flat_params, flat_mask = flatten(params), flatten(mask)
    if set(flat_params) != set(flat_mask):
        raise ValueError("the mask is not shaped like the params: their leaves differ")
    header, arrays = [], {}
    for i, (leaf_path, leaf) in enumerate(flat_params.items()):
        value, alive = np.asarray(leaf), np.asarray(flat_mask[leaf_path], dtype=bool)
        if value.shape != alive.shape:
            raise ValueError(f"mask of {leaf_path} is {alive.shape}, the param {value.shape}")
        encoding, parts = _encode(value, alive)
        header.append(
            {
                "path": leaf_path,
                "encoding": encoding,
                "shape": list(value.shape),
                "dtype": value.dtype.name,
            }
        )
        arrays.update({f"{i}.{name}": part for name, part in parts.items()})
    arrays[_HEADER] = np.array(json.dumps({"format": FORMAT, "version": VERSION, "leaves": header}))
    data = _npz_bytes(arrays, compressed=True)
    atomic_write_bytes(path, data)
    return len(data)


def load_sparse(path: str | os.PathLike) -> Any:
    """The params :func:`save_sparse` wrote, as a nested dict of dense NumPy arrays."""
    with np.load(path, allow_pickle=False) as arrays:
        header = json.loads(str(arrays[_HEADER]))
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise ValueError(
                f"{path} is not a {FORMAT} file of version {VERSION} "
                f"(found {header.get('format')!r}, version {header.get('version')!r})"
            )
        flat = {
            leaf["path"]: _decode(leaf, arrays, str(i)) for i, leaf in enumerate(header["leaves"])
        }
    return unflatten(flat)


def dense_size(params: Any, compressed: bool = False) -> int:
    """Bytes of the plain ``.npz`` of ``params`` (uncompressed unless asked): what the sparse
    file saves on."""
    arrays = {p: _raw(np.asarray(v)) for p, v in flatten(params).items()}
    return len(_npz_bytes(arrays, compressed))
