#!/usr/bin/python3
"""st.py - minimal safetensors reader/writer (numpy core, torch adapters) and .npy helpers.

Debian ships no python3-safetensors, so the test generators use this instead. It follows the
format spec of https://github.com/huggingface/safetensors (README "Format"):

    [8 bytes little-endian u64 N][N bytes JSON header][data buffer]
    header = {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
              "__metadata__": {"<str>": "<str>"}}     (offsets relative to the data buffer)

Writer: tensors are laid out by decreasing element size, then by name (as the Rust writer does,
so every tensor is aligned to its element size); the header is padded with spaces to a multiple
of 8 bytes. Reader: validates everything a hostile file could get wrong (header length, JSON,
dtype, shape, offsets inside the buffer, size == prod(shape) * itemsize, no overlap) and raises
ValueError("<path>: <problem>") in one line.

BF16 has no numpy dtype: numpy-side BF16 tensors are carried as uint16 bit patterns inside a
`Bf16` wrapper; `to_torch`/`from_torch` convert to and from torch.bfloat16 bit-exactly.

CLI:  st.py dump FILE.safetensors       list tensors (name dtype shape min max mean)
"""
import json
import os
import struct
import sys

import numpy as np

# safetensors dtype tag -> (numpy dtype of the stored bits, item size)
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # bit pattern; see Bf16
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NP_TO_TAG = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}
_MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit


class Bf16:
    """A bfloat16 tensor held as its uint16 bit pattern (numpy has no bfloat16)."""

    def __init__(self, bits):
        bits = np.asarray(bits)
        if bits.dtype != np.uint16:
            raise ValueError(f"Bf16 expects uint16 bits, got {bits.dtype}")
        self.bits = bits

    @property
    def shape(self):
        return self.bits.shape

    @staticmethod
    def from_float32(x):
        """Round-to-nearest-even float32 -> bf16 (what torch's .to(bfloat16) does)."""
        u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
        nan = np.isnan(np.asarray(x, dtype=np.float32))
        rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        rounded[nan] = 0x7FC0
        return Bf16(rounded)

    def to_float32(self):
        return (self.bits.astype(np.uint32) << 16).view(np.float32)


# ---- read ----

def read_header(path):
    """Returns (header dict without __metadata__, metadata dict, data offset, data length)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size < 8:
            raise ValueError(f"{path}: file too short for a safetensors header ({size} bytes)")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > _MAX_HEADER or n > size - 8:
            raise ValueError(f"{path}: header length {n} exceeds file size {size} (or the 100 MiB limit)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: header is not valid UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header must be a JSON object, got {type(header).__name__}")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError(f"{path}: __metadata__ must map strings to strings")
    data_len = size - 8 - n
    spans = []
    for name, e in header.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{path}: tensor '{name}' entry must have exactly dtype, shape, data_offsets")
        if e["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor '{name}' has unsupported dtype '{e['dtype']}'; "
                             f"expected one of {sorted(_DTYPES)}")
        shape = e["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                  and d >= 0 for d in shape):
            raise ValueError(f"{path}: tensor '{name}' has invalid shape {shape!r}")
        off = e["data_offsets"]
        if (not isinstance(off, list) or len(off) != 2 or not all(isinstance(o, int) for o in off)
                or not 0 <= off[0] <= off[1] <= data_len):
            raise ValueError(f"{path}: tensor '{name}' data_offsets {off!r} outside data buffer "
                             f"of {data_len} bytes")
        want = int(np.prod(shape, dtype=np.int64)) * _DTYPES[e["dtype"]].itemsize
        if off[1] - off[0] != want:
            raise ValueError(f"{path}: tensor '{name}' has {off[1] - off[0]} bytes; expected {want} "
                             f"for {e['dtype']}{shape}")
        spans.append((off[0], off[1], name))
    spans.sort()
    for (b0, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise ValueError(f"{path}: tensors '{n0}' and '{n1}' overlap in the data buffer")
    return header, meta, 8 + n, data_len


def load(path):
    """Returns ({name: np.ndarray or Bf16}, metadata). Arrays are read-only views of a copy."""
    header, meta, data_off, _ = read_header(path)
    with open(path, "rb") as f:
        f.seek(data_off)
        buf = f.read()
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        arr = np.frombuffer(buf, dtype=_DTYPES[e["dtype"]], count=(end - b) // _DTYPES[e["dtype"]].itemsize,
                            offset=b).reshape(e["shape"])
        out[name] = Bf16(arr) if e["dtype"] == "BF16" else arr
    return out, meta


# ---- write ----

def _tag_and_bytes(name, t):
    if isinstance(t, Bf16):
        return "BF16", list(t.bits.shape), np.ascontiguousarray(t.bits, dtype="<u2").tobytes()
    a = np.asarray(t)
    if a.dtype not in _NP_TO_TAG:
        raise ValueError(f"tensor '{name}': unsupported numpy dtype {a.dtype}")
    tag = _NP_TO_TAG[a.dtype]
    return tag, list(a.shape), np.ascontiguousarray(a, dtype=_DTYPES[tag]).tobytes()


def save(tensors, path, metadata=None):
    """Writes {name: np.ndarray or Bf16} to path in safetensors format."""
    items = [(name,) + _tag_and_bytes(name, t) for name, t in tensors.items()]
    items.sort(key=lambda it: (-_DTYPES[it[1]].itemsize, it[0]))
    header, off = {}, 0
    for name, tag, shape, data in items:
        header[name] = {"dtype": tag, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    if metadata:
        header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}, **header}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    # Write through a temp file + rename only for regular files: renaming over a device or pipe
    # (e.g. --output /dev/null) would replace the special file itself.
    atomic = not os.path.exists(path) or os.path.isfile(path)
    target = path + ".tmp" if atomic else path
    with open(target, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, _, _, data in items:
            f.write(data)
    if atomic:
        os.replace(target, path)


# ---- torch adapters (torch imported lazily so the numpy core stays torch-free) ----

def to_torch(t):
    import torch
    if isinstance(t, Bf16):
        return torch.from_numpy(t.bits.astype(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.array(t))


def from_torch(t):
    import torch
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return Bf16(t.view(torch.int16).numpy().astype(np.uint16))
    return t.numpy()


def load_torch(path):
    """Returns ({name: torch.Tensor}, metadata)."""
    arrays, meta = load(path)
    return {k: to_torch(v) for k, v in arrays.items()}, meta


def save_torch(tensors, path, metadata=None):
    save({k: from_torch(v) for k, v in tensors.items()}, path, metadata)


def load_checkpoint_torch(model_dir):
    """Loads model.safetensors, or every shard named by model.safetensors.index.json."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index}: missing or empty 'weight_map'")
        out = {}
        for shard in sorted(set(weight_map.values())):
            tensors, _ = load_torch(os.path.join(model_dir, shard))
            for k, v in tensors.items():
                if weight_map.get(k) != shard:
                    raise ValueError(f"{index}: tensor '{k}' is in {shard} but the weight_map says "
                                     f"{weight_map.get(k)!r}")
                out[k] = v
        missing = sorted(set(weight_map) - set(out))
        if missing:
            raise ValueError(f"{index}: tensors listed but not found in shards: {missing[:3]}")
        return out
    path = os.path.join(model_dir, "model.safetensors")
    if not os.path.exists(path):
        raise ValueError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")
    return load_torch(path)[0]


# ---- .npy (numpy's own format code; allow_pickle off) ----

def save_npy(path, array):
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)


def load_npy(path):
    return np.load(path, allow_pickle=False)


def _dump(path):
    arrays, meta = load(path)
    if meta:
        print("__metadata__", json.dumps(meta))
    for name in sorted(arrays):
        a = arrays[name]
        tag = "BF16" if isinstance(a, Bf16) else _NP_TO_TAG[a.dtype]
        f = a.to_float32() if isinstance(a, Bf16) else a
        stats = ""
        if f.size and f.dtype != np.bool_:
            f = f.astype(np.float64)
            stats = f"  min={f.min():.6g} max={f.max():.6g} mean={f.mean():.6g}"
        print(f"{name}  {tag}{list(a.shape)}{stats}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "dump":
        sys.exit("usage: st.py dump FILE.safetensors")
    try:
        _dump(sys.argv[2])
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
