"""What a checkpoint folder holds: files, bytes and parameters, read from safetensors headers.

Reading the headers costs kilobytes, not gigabytes: the parameter count and size on disk
of a 15 GB checkpoint are known without loading it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip


def safetensors_header(path: Path) -> dict:
    """The JSON header of a ``.safetensors`` file (tensor names, dtypes, shapes)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100_000_000:
            raise ValueError(f"{path}: safetensors header of {length} bytes is not plausible")
        return json.loads(handle.read(length))


def summarize(folder: Path) -> dict:
    """Files with their sizes, total bytes, weight bytes, parameters and weight dtypes."""
    files = []
    parameters = 0
    dtypes: dict[str, int] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative.startswith(".") or "/." in relative or relative == "manifest.json":
            continue
        files.append({"path": relative, "bytes": path.stat().st_size})
        if path.suffix == ".safetensors":
            for name, info in safetensors_header(path).items():
                if name == "__metadata__":
                    continue
                count = 1
                for dim in info["shape"]:
                    count *= dim
                parameters += count
                dtypes[info["dtype"]] = dtypes.get(info["dtype"], 0) + count
    weights = [f for f in files if f["path"].endswith(".safetensors")]
    return {
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files),
        "weights_bytes": sum(f["bytes"] for f in weights),
        "stored_parameters": parameters,
        "stored_dtypes": dtypes,
    }
