"""Save and load MXFP4 tensors in safetensors files, in the GPT-OSS checkpoint layout. No pickle anywhere.

An :class:`~mxfp4.MXFP4Tensor` named ``NAME`` is stored as two uint8 tensors, ``NAME_blocks [*batch, G, 16]`` and
``NAME_scales [*batch, G]``: byte for byte what GPT-OSS checkpoints on the Hugging Face Hub hold (and what
transformers decodes). Its logical shape and quantized axis go into the file's metadata under the key ``mxfp4``
(JSON), so a partial last block and a non-last axis round-trip. Other tensors are stored as they are.

Files without that key (e.g. a Hub checkpoint shard) are read by convention: every ``NAME_blocks`` / ``NAME_scales``
pair becomes an MXFP4Tensor ``NAME`` quantized along its last axis, with length ``G * 32``.

Loading streams tensor by tensor (``safe_open``) and validates dtypes and shapes; anything wrong with the file
raises :class:`MXFP4FormatError` (a ValueError) naming the file and the tensor.

    >>> mxfp4.save_file({"w": mxfp4.quantize(torch.randn(64, 100)), "bias": torch.zeros(64)}, "layer.safetensors")
    >>> mxfp4.load_file("layer.safetensors")["w"]      # MXFP4Tensor(shape=(64, 100), axis=1, ...)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file as _safetensors_save_file

from .tensor import MXFP4Tensor

__all__ = [
    "save_file",
    "load_file",
    "read_metadata",
    "MXFP4FormatError",
    "BLOCKS_SUFFIX",
    "SCALES_SUFFIX",
    "METADATA_KEY",
]

BLOCKS_SUFFIX = "_blocks"
SCALES_SUFFIX = "_scales"
METADATA_KEY = "mxfp4"
"""Metadata key holding ``{"version": 1, "tensors": {NAME: {"shape": [...], "axis": int}}}`` as JSON."""
FORMAT_VERSION = 1


class MXFP4FormatError(ValueError):
    """A safetensors file is truncated, corrupt, or holds MXFP4 tensors that do not fit together."""


def save_file(
    tensors: Mapping[str, torch.Tensor | MXFP4Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` to a safetensors file at ``path``.

    Args:
        tensors: name -> torch.Tensor (stored as is) or MXFP4Tensor (stored as ``NAME_blocks`` + ``NAME_scales``,
            uint8). Tensors may live on any device; they are written one at a time.
        path: the file to write; it is written to a temporary name first and renamed, so an interrupted save
            never leaves a truncated file under ``path``.
        metadata: extra ``str -> str`` entries for the file header (``"format": "pt"`` is added unless given,
            as transformers expects; the key ``"mxfp4"`` is reserved).

    Raises:
        TypeError: a name is not a str, a value is neither a tensor nor an MXFP4Tensor, metadata is not str -> str.
        ValueError: two entries would be stored under the same name (e.g. MXFP4 ``w`` and a tensor ``w_blocks``).
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(f"save_file expects a dict of name -> tensor, got {type(tensors).__name__}")
    stored: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    layout: dict[str, dict] = {}

    def put(stored_name: str, tensor: torch.Tensor, logical_name: str) -> None:
        if stored_name in stored:
            raise ValueError(
                f"save_file: {logical_name!r} and {origin[stored_name]!r} would both be stored as {stored_name!r}; "
                "rename one"
            )
        stored[stored_name] = tensor
        origin[stored_name] = logical_name

    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"save_file: tensor names must be non-empty str, got {name!r}")
        if isinstance(value, MXFP4Tensor):
            put(name + BLOCKS_SUFFIX, value.blocks, name)
            put(name + SCALES_SUFFIX, value.scales, name)
            layout[name] = {"shape": list(value.shape), "axis": value.axis}
        elif isinstance(value, torch.Tensor):
            put(name, value, name)
        else:
            raise TypeError(
                f"save_file: {name!r} is a {type(value).__name__}, expected a torch.Tensor or an MXFP4Tensor"
            )

    header = {"format": "pt"}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"save_file: metadata must map str to str, got {key!r}: {type(value).__name__}")
        if key == METADATA_KEY:
            raise ValueError(f"save_file: the metadata key {METADATA_KEY!r} is reserved for the MXFP4 layout")
        header[key] = value
    header[METADATA_KEY] = json.dumps({"version": FORMAT_VERSION, "tensors": layout}, separators=(",", ":"))

    path = os.fspath(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        _safetensors_save_file(_independent_cpu_tensors(stored), temporary, metadata=header)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _independent_cpu_tensors(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, each owning its storage (safetensors refuses tensors that share memory, which
    views such as ``experts[0]`` beside ``experts`` do)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in stored.items():
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.untyped_storage().data_ptr() in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return out


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``str -> str`` metadata of a safetensors file (the ``mxfp4`` layout entry included); loads no tensor."""
    path = os.fspath(path)
    with _open(path, "cpu") as handle:
        return dict(handle.metadata() or {})


def load_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor | MXFP4Tensor]:
    """Read a safetensors file: MXFP4 pairs become :class:`MXFP4Tensor`, other tensors stay tensors.

    Args:
        path: a file written by :func:`save_file`, or any safetensors file (a GPT-OSS shard from the Hub: its
            ``*_blocks`` / ``*_scales`` pairs load as MXFP4Tensors quantized along their last axis).
        device: where the tensors go (``"cpu"``, ``"cuda:0"``, ...), one tensor at a time.

    Returns:
        name -> tensor or MXFP4Tensor (MXFP4 pairs under their logical name ``NAME``).

    Raises:
        FileNotFoundError: no such file.
        MXFP4FormatError: the file is truncated or corrupt; an MXFP4 pair misses a half; blocks/scales are not
            uint8, have the wrong shape, or do not fit the recorded shape/axis; two entries load under one name.
    """
    path = os.fspath(path)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"load_file: device {device} was requested but CUDA is not available")
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_file: no such file {path!r}")
    with _open(path, "cpu") as handle:
        names = list(handle.keys())
        layout = _layout(path, handle.metadata())
        pairs = _pair_names(path, names, layout)
        paired = {stored for blocks_scales in pairs.values() for stored in blocks_scales}
        result: dict[str, torch.Tensor | MXFP4Tensor] = {}
        for name in names:
            if name in paired and not name.endswith(BLOCKS_SUFFIX):
                continue
            if name in paired:
                logical = name[: -len(BLOCKS_SUFFIX)]
                blocks_name, scales_name = pairs[logical]
                value = _load_pair(path, handle, logical, blocks_name, scales_name, (layout or {}).get(logical), device)
            else:
                logical = name
                value = _get(path, handle, name).to(device)
            if logical in result:
                raise MXFP4FormatError(
                    f"{path}: {logical!r} is both a tensor and an MXFP4 pair ({logical}{BLOCKS_SUFFIX}); rename one"
                )
            result[logical] = value
        return result


class _open:
    """``safe_open`` whose failures on bad bytes become MXFP4FormatError naming the file."""

    def __init__(self, path: str, device: str):
        self.path, self.device = path, device

    def __enter__(self):
        try:
            self.context = safe_open(self.path, framework="pt", device=self.device)
            return self.context.__enter__()
        except (SafetensorError, OSError, ValueError) as error:
            if isinstance(error, FileNotFoundError):
                raise
            raise MXFP4FormatError(
                f"{self.path}: not a readable safetensors file (truncated or corrupt?): {error}"
            ) from error

    def __exit__(self, *exc):
        return self.context.__exit__(*exc)


def _get(path: str, handle, name: str) -> torch.Tensor:
    try:
        return handle.get_tensor(name)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise MXFP4FormatError(
            f"{path}: tensor {name!r} cannot be read (truncated or corrupt file?): {error}"
        ) from error


def _layout(path: str, metadata: dict | None) -> dict[str, dict] | None:
    """The recorded MXFP4 layout, or None for a file without one (a Hub checkpoint)."""
    if not metadata or METADATA_KEY not in metadata:
        return None
    try:
        record = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise MXFP4FormatError(f"{path}: metadata {METADATA_KEY!r} is not valid JSON: {error}") from None
    if not isinstance(record, dict) or not isinstance(record.get("tensors"), dict):
        raise MXFP4FormatError(
            f"{path}: metadata {METADATA_KEY!r} has no 'tensors' table: {metadata[METADATA_KEY][:200]!r}"
        )
    if record.get("version") != FORMAT_VERSION:
        raise MXFP4FormatError(
            f"{path}: MXFP4 layout version {record.get('version')!r}; this mxfp4 reads version {FORMAT_VERSION} "
            "(upgrade mxfp4?)"
        )
    for name, entry in record["tensors"].items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        axis = entry.get("axis") if isinstance(entry, dict) else None
        if (
            not isinstance(shape, list)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
            or not isinstance(axis, int)
            or isinstance(axis, bool)
        ):
            raise MXFP4FormatError(
                f"{path}: MXFP4 layout of {name!r} needs an int list 'shape' and an int 'axis', got {entry!r}"
            )
    return record["tensors"]


def _pair_names(path: str, names: list[str], layout: dict | None) -> dict[str, tuple[str, str]]:
    """Logical name -> (blocks name, scales name) of every MXFP4 tensor in the file; a missing half is an error."""
    present = set(names)
    if layout is not None:
        candidates = set(layout)
    else:
        candidates = {n[: -len(BLOCKS_SUFFIX)] for n in names if n.endswith(BLOCKS_SUFFIX)}
        candidates |= {n[: -len(SCALES_SUFFIX)] for n in names if n.endswith(SCALES_SUFFIX)}
        candidates.discard("")
    pairs = {}
    for logical in sorted(candidates):
        blocks_name, scales_name = logical + BLOCKS_SUFFIX, logical + SCALES_SUFFIX
        missing = [n for n in (blocks_name, scales_name) if n not in present]
        if missing:
            found = [n for n in (blocks_name, scales_name) if n in present]
            raise MXFP4FormatError(
                f"{path}: MXFP4 tensor {logical!r} is missing {missing[0]!r}"
                + (f" (only {found[0]!r} is in the file)" if found else " (named in the file's mxfp4 metadata)")
            )
        pairs[logical] = (blocks_name, scales_name)
    return pairs


def _load_pair(path, handle, logical, blocks_name, scales_name, entry, device) -> MXFP4Tensor:
    blocks, scales = _get(path, handle, blocks_name), _get(path, handle, scales_name)
    for stored_name, tensor in ((blocks_name, blocks), (scales_name, scales)):
        if tensor.dtype != torch.uint8:
            raise MXFP4FormatError(f"{path}: {stored_name!r} must be uint8 (packed MXFP4 bytes), got {tensor.dtype}")
    try:
        if entry is None:
            value = MXFP4Tensor.from_blocks(blocks, scales)
        else:
            value = MXFP4Tensor.from_blocks(blocks, scales, shape=entry["shape"], axis=entry["axis"])
    except (TypeError, ValueError) as error:
        raise MXFP4FormatError(
            f"{path}: MXFP4 tensor {logical!r} ({blocks_name}, {scales_name}) is inconsistent: {error}"
        ) from None
    return value.to(device)
