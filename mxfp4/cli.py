"""The ``mxfp4`` command line: convert checkpoints to and from MXFP4, look inside them, benchmark, demo.

    mxfp4 quantize IN OUT [--include REGEX] [--scale-mode floor|ceil|mse]
    mxfp4 dequantize IN OUT [--dtype bf16|fp16|fp32]
    mxfp4 inspect FILE_OR_DIR
    mxfp4 bench [options of python -m mxfp4.bench]
    mxfp4 demo

``IN`` is a ``.safetensors`` file or a checkpoint directory (``model.safetensors``, or shards plus
``model.safetensors.index.json``). Conversion streams one tensor at a time: the input is read tensor by tensor and
the output written as it is produced (the output header is planned up front, since every output shape is known),
so peak memory is about one tensor, whatever the checkpoint's size. A progress bar on stderr shows the throughput.

Naming follows the GPT-OSS checkpoints on the Hugging Face Hub: a quantized tensor ``NAME`` is stored as
``NAME_blocks`` uint8 ``[*batch, G, 16]`` and ``NAME_scales`` uint8 ``[*batch, G]``, quantized along its input
features. For GPT-OSS expert tensors (``...mlp.experts.gate_up_proj`` / ``down_proj``, stored by transformers as
``[E, in, out]``) that is axis 1, which yields exactly the Hub's ``[E, out, G, 16]`` bytes; for every other tensor
(``nn.Linear`` weights ``[out, in]``) it is the last axis. The logical shape and axis go into the file's ``mxfp4``
metadata (as :mod:`mxfp4.io` writes it), so ``dequantize`` restores the original tensor layout; Hub files without
that metadata dequantize GPT-OSS experts to transformers' ``[E, in, out]`` and everything else along the last axis.

Every failure the user can cause (a missing path, a corrupt file, no matching tensor, an output that would
overwrite the input) ends with one line on stderr, ``mxfp4: error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import struct
import sys
import time
from pathlib import Path

EXIT_USAGE = 2
DEFAULT_INCLUDE = r"(^|\.)experts\.(gate_up_proj|down_proj)$"
"""Default ``--include``: the MoE expert weights, the tensors GPT-OSS checkpoints store in MXFP4."""
GPT_OSS_EXPERTS = re.compile(r"(^|\.)experts\.(gate_up_proj|down_proj)$")
"""Expert tensors that transformers stores as ``[E, in, out]``: quantized along axis 1 (input features)."""
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
COPY_CHUNK_BYTES = 64 << 20
_HEADER_LENGTH_BYTES = 8
_MAX_HEADER_BYTES = 100 << 20
_HEADER_ALIGNMENT = 8

# safetensors dtype name -> bytes per element (the names the format defines).
SAFETENSORS_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F4": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
FLOAT_DTYPES = ("BF16", "F16", "F32", "F64")
OUTPUT_DTYPES = {"bf16": "BF16", "bfloat16": "BF16", "fp16": "F16", "float16": "F16", "fp32": "F32", "float32": "F32"}


class CLIError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


# =================================================================================================================
# safetensors, streamed
# =================================================================================================================
@dataclasses.dataclass(frozen=True)
class StoredTensor:
    """One tensor of a safetensors file: where its bytes are (absolute file offsets) and what they mean."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def read_header(path: Path) -> tuple[dict[str, StoredTensor], dict[str, str]]:
    """The tensors (in file order) and metadata of a safetensors file, validated; no tensor data is read.

    Raises CLIError naming the file for anything that is not a complete safetensors file.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(_HEADER_LENGTH_BYTES)
            if len(prefix) < _HEADER_LENGTH_BYTES:
                raise CLIError(f"{path}: not a safetensors file ({size} bytes, too short for a header)")
            (header_bytes,) = struct.unpack("<Q", prefix)
            if header_bytes > min(_MAX_HEADER_BYTES, size - _HEADER_LENGTH_BYTES):
                raise CLIError(f"{path}: not a safetensors file (header length {header_bytes} does not fit its {size} bytes)")
            raw = handle.read(header_bytes)
    except OSError as error:
        raise CLIError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CLIError(f"{path}: corrupt safetensors header (not valid JSON)") from None
    if not isinstance(header, dict):
        raise CLIError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CLIError(f"{path}: corrupt safetensors header (__metadata__ must map str to str)")
    data_start = _HEADER_LENGTH_BYTES + header_bytes
    data_size = size - data_start
    tensors = []
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            valid = isinstance(dtype, str) and all(isinstance(s, int) and s >= 0 for s in shape) and 0 <= begin <= end
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise CLIError(f"{path}: corrupt safetensors header entry for {name!r}: {str(entry)[:120]}")
        if end > data_size:
            raise CLIError(f"{path}: truncated: tensor {name!r} ends at byte {end} of a {data_size}-byte data section")
        itemsize = SAFETENSORS_ITEMSIZE.get(dtype)
        if itemsize is not None and math.prod(shape) * itemsize != end - begin:
            raise CLIError(f"{path}: corrupt: tensor {name!r} {dtype}{list(shape)} needs {math.prod(shape) * itemsize} bytes, has {end - begin}")
        tensors.append(StoredTensor(name, dtype, shape, data_start + begin, data_start + end))
    tensors.sort(key=lambda t: t.begin)
    return {t.name: t for t in tensors}, metadata


def read_tensor(path: Path, stored: StoredTensor):
    """The tensor's bytes as a CPU torch tensor of its dtype and shape (one allocation of its size)."""
    import torch

    dtypes = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64, "U8": torch.uint8}
    if stored.dtype not in dtypes:
        raise CLIError(f"{path}: tensor {stored.name!r} has dtype {stored.dtype}, which mxfp4 does not convert")
    buffer = bytearray(stored.nbytes)
    with open(path, "rb") as handle:
        handle.seek(stored.begin)
        if handle.readinto(buffer) != stored.nbytes:
            raise CLIError(f"{path}: truncated while reading tensor {stored.name!r}")
    if not buffer:
        return torch.empty(stored.shape, dtype=dtypes[stored.dtype])
    return torch.frombuffer(buffer, dtype=dtypes[stored.dtype]).reshape(stored.shape)


class StreamWriter:
    """Write a safetensors file whose tensors (names, dtypes, shapes) are known before their data.

    The header is written first; tensors are then appended in the planned order. The file is written under a
    temporary name and renamed by :meth:`close`, so an interrupted conversion never leaves a truncated output.
    """

    def __init__(self, path: Path, planned: list[tuple[str, str, tuple[int, ...], int]], metadata: dict[str, str]):
        self.path = path
        self.temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        header: dict = {"__metadata__": metadata} if metadata else {}
        offset = 0
        for name, dtype, shape, nbytes in planned:
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-(len(encoded) + _HEADER_LENGTH_BYTES) % _HEADER_ALIGNMENT)
        self.pending = [(name, nbytes) for name, _, _, nbytes in planned]
        self.total = offset
        self.handle = open(self.temporary, "wb")
        self.handle.write(struct.pack("<Q", len(encoded)))
        self.handle.write(encoded)

    def begin_tensor(self, name: str, nbytes: int) -> None:
        """Start the next planned tensor; its bytes follow through :meth:`write_data` (in C order)."""
        expected_name, expected_bytes = self.pending.pop(0)
        if (expected_name, expected_bytes) != (name, nbytes):  # pragma: no cover - a bug in the planner
            raise RuntimeError(f"writer expected {expected_name} ({expected_bytes} bytes), got {name} ({nbytes} bytes)")

    def write_data(self, tensor) -> None:
        """Append a tensor's bytes (any device, any strides: copied to a contiguous CPU tensor first)."""
        import torch

        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.numel():
            self.handle.write(memoryview(tensor.view(-1).view(torch.uint8).numpy()))

    def write_tensor(self, name: str, tensor) -> None:
        self.begin_tensor(name, tensor.numel() * tensor.element_size())
        self.write_data(tensor)

    def copy_bytes(self, name: str, source: Path, begin: int, nbytes: int, progress=None) -> None:
        """Copy a tensor's bytes from another file, in chunks (pass-through tensors never enter torch)."""
        self.begin_tensor(name, nbytes)
        with open(source, "rb") as handle:
            handle.seek(begin)
            left = nbytes
            while left:
                chunk = handle.read(min(COPY_CHUNK_BYTES, left))
                if not chunk:
                    raise CLIError(f"{source}: truncated while copying tensor {name!r}")
                self.handle.write(chunk)
                left -= len(chunk)
                if progress is not None:
                    progress.update(len(chunk))

    def close(self) -> None:
        if self.pending:  # pragma: no cover - a bug in the planner
            raise RuntimeError(f"writer closed with tensors still to write: {[n for n, _ in self.pending][:3]}")
        self.handle.close()
        os.replace(self.temporary, self.path)

    def abort(self) -> None:
        self.handle.close()
        if self.temporary.exists():
            self.temporary.unlink()


# =================================================================================================================
# conversion plans
# =================================================================================================================
@dataclasses.dataclass
class Step:
    """What happens to one input tensor: ``copy``, ``quantize`` (into a pair) or ``dequantize`` (from a pair)."""

    kind: str
    name: str  # logical name: the output tensor (dequantize) or the input tensor (copy, quantize)
    sources: tuple[StoredTensor, ...]
    outputs: list[tuple[str, str, tuple[int, ...], int]]
    shape: tuple[int, ...] = ()
    axis: int = -1

    @property
    def input_bytes(self) -> int:
        return sum(s.nbytes for s in self.sources)


def _mxfp4_layout(metadata: dict[str, str], path: Path) -> dict[str, dict]:
    from .io import METADATA_KEY

    if METADATA_KEY not in metadata:
        return {}
    try:
        return dict(json.loads(metadata[METADATA_KEY])["tensors"])
    except (ValueError, KeyError, TypeError):
        raise CLIError(f"{path}: corrupt '{METADATA_KEY}' metadata (expected JSON with a 'tensors' table)") from None


def quantized_axis(name: str, ndim: int) -> int:
    """The axis a tensor is quantized along: input features (axis 1 of GPT-OSS ``[E, in, out]`` experts, else last)."""
    return 1 if ndim == 3 and GPT_OSS_EXPERTS.search(name) else ndim - 1


def plan_quantize(path: Path, tensors: dict[str, StoredTensor], include: re.Pattern) -> list[Step]:
    from .io import BLOCKS_SUFFIX, SCALES_SUFFIX
    from .spec import BYTES_PER_BLOCK, num_blocks

    steps = []
    for name, stored in tensors.items():
        if include.search(name) and stored.dtype in FLOAT_DTYPES and len(stored.shape) in (2, 3) and math.prod(stored.shape):
            axis = quantized_axis(name, len(stored.shape))
            batch = stored.shape[:axis] + stored.shape[axis + 1 :]
            groups = num_blocks(stored.shape[axis])
            for suffix in (BLOCKS_SUFFIX, SCALES_SUFFIX):
                if name + suffix in tensors:
                    raise CLIError(f"{path}: cannot quantize {name!r}: the file already holds {name + suffix!r}")
            outputs = [
                (name + BLOCKS_SUFFIX, "U8", (*batch, groups, BYTES_PER_BLOCK), math.prod(batch) * groups * BYTES_PER_BLOCK),
                (name + SCALES_SUFFIX, "U8", (*batch, groups), math.prod(batch) * groups),
            ]
            steps.append(Step("quantize", name, (stored,), outputs, stored.shape, axis))
        else:
            steps.append(Step("copy", name, (stored,), [(name, stored.dtype, stored.shape, stored.nbytes)]))
    return steps


def plan_dequantize(path: Path, tensors: dict[str, StoredTensor], layout: dict[str, dict], dtype: str) -> list[Step]:
    from .io import BLOCKS_SUFFIX, SCALES_SUFFIX
    from .spec import BLOCK_SIZE, BYTES_PER_BLOCK, num_blocks

    steps = []
    for name, stored in tensors.items():
        if name.endswith(SCALES_SUFFIX) and name[: -len(SCALES_SUFFIX)] + BLOCKS_SUFFIX in tensors:
            continue  # handled with its blocks
        logical = name[: -len(BLOCKS_SUFFIX)] if name.endswith(BLOCKS_SUFFIX) else None
        if logical is None or logical + SCALES_SUFFIX not in tensors:
            steps.append(Step("copy", name, (stored,), [(name, stored.dtype, stored.shape, stored.nbytes)]))
            continue
        scales = tensors[logical + SCALES_SUFFIX]
        if stored.dtype != "U8" or scales.dtype != "U8" or len(stored.shape) < 2 or stored.shape[-1] != BYTES_PER_BLOCK \
                or stored.shape[:-1] != scales.shape:
            raise CLIError(
                f"{path}: {name} {stored.dtype}{list(stored.shape)} and {scales.name} {scales.dtype}{list(scales.shape)} "
                f"are not an MXFP4 pair (expected uint8 [..., G, {BYTES_PER_BLOCK}] and [..., G])"
            )
        batch, groups = stored.shape[:-2], stored.shape[-2]
        if logical in layout:
            shape, axis = tuple(layout[logical]["shape"]), int(layout[logical]["axis"])
            expected = shape[:axis] + shape[axis + 1 :] if 0 <= axis < len(shape) else None
            if expected != batch or num_blocks(shape[axis]) != groups:
                raise CLIError(f"{path}: mxfp4 metadata says {logical!r} is {list(shape)} along axis {axis}, which blocks {list(stored.shape)} cannot hold")
        elif len(batch) == 2 and GPT_OSS_EXPERTS.search(logical):  # Hub experts [E, out, G, 16] -> [E, in, out]
            shape, axis = (batch[0], groups * BLOCK_SIZE, batch[1]), 1
        else:
            shape, axis = (*batch, groups * BLOCK_SIZE), len(batch)
        itemsize = SAFETENSORS_ITEMSIZE[dtype]
        steps.append(Step("dequantize", logical, (stored, scales), [(logical, dtype, shape, math.prod(shape) * itemsize)], shape, axis))
    return steps


# =================================================================================================================
# running a plan over one file
# =================================================================================================================
def _progress(total: int, description: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024, disable=quiet,
                file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


def convert_file(source: Path, target: Path, steps: list[Step], metadata: dict[str, str], *, scale_mode="floor",
                 dtype: str = "BF16", quiet: bool = False) -> dict:
    """Run ``steps`` from ``source`` into ``target``; returns a summary (bytes in/out, tensors converted, seconds)."""
    import torch

    from . import ops
    from .tensor import MXFP4Tensor

    torch_dtype = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}[dtype]
    planned = [output for step in steps for output in step.outputs]
    writer = StreamWriter(target, planned, metadata)
    started = time.perf_counter()
    converted = 0
    try:
        with _progress(sum(step.input_bytes for step in steps), source.name, quiet) as progress:
            for step in steps:
                progress.set_postfix_str(step.name[-48:], refresh=False)
                if step.kind == "copy":
                    stored = step.sources[0]
                    writer.copy_bytes(step.name, source, stored.begin, stored.nbytes, progress)
                    continue
                if step.kind == "quantize":
                    weight = read_tensor(source, step.sources[0])
                    q = ops.quantize(weight, step.axis, scale_mode=scale_mode, backend="torch")
                    del weight
                    writer.write_tensor(step.outputs[0][0], q.blocks)
                    writer.write_tensor(step.outputs[1][0], q.scales)
                else:
                    blocks, scales = (read_tensor(source, s) for s in step.sources)
                    q = MXFP4Tensor.from_blocks(blocks, scales, step.shape, step.axis)
                    _write_dequantized(writer, step.outputs[0][0], q, torch_dtype)
                converted += 1
                progress.update(step.input_bytes)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"tensors": len(steps), "converted": converted, "bytes_in": sum(s.input_bytes for s in steps),
            "bytes_out": writer.total, "seconds": time.perf_counter() - started}


def _write_dequantized(writer: StreamWriter, name: str, q, dtype) -> None:
    """Write ``dequantize(q)`` in C order holding at most one dequantized copy.

    Quantized along the last axis, the decoded storage is already in order. Along a middle axis (GPT-OSS experts
    ``[E, in, out]``), it goes slab by slab over dim 0, so the transpose costs one slab, not a second tensor.
    """
    import torch

    from . import ops
    from .tensor import MXFP4Tensor

    itemsize = torch.empty((), dtype=dtype).element_size()
    writer.begin_tensor(name, q.numel() * itemsize)
    if q.axis in (0, q.ndim - 1):
        writer.write_data(ops.dequantize(q, dtype, backend="torch"))
        return
    for index in range(q.shape[0]):
        slab = MXFP4Tensor(q.blocks[index], q.scales[index], q.shape[1:], q.axis - 1)
        writer.write_data(ops.dequantize(slab, dtype, backend="torch"))


# =================================================================================================================
# files and directories
# =================================================================================================================
def _shards(directory: Path) -> tuple[list[str], dict | None]:
    """The safetensors files of a checkpoint directory and its index (None for a single ``model.safetensors``)."""
    index_path = directory / INDEX_FILE
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
            weight_map = index["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise CLIError(f"{index_path}: not a safetensors index (no weight_map)") from None
        files = sorted(set(weight_map.values()))
        for name in files:
            if not (directory / name).is_file():
                raise CLIError(f"{index_path}: lists shard {name!r}, which is not in {directory}")
        return files, index
    files = sorted(p.name for p in directory.glob("*.safetensors"))
    if not files:
        raise CLIError(f"{directory}: no .safetensors files (and no {INDEX_FILE})")
    return files, None


def _check_paths(source: Path, target: Path) -> None:
    if not source.exists():
        raise CLIError(f"{source}: no such file or directory")
    if source.resolve() == target.resolve() or (source.is_dir() and target.resolve().is_relative_to(source.resolve())):
        raise CLIError(f"refusing to write {target} over or inside the input {source}; choose another output path")


def _target_file(source: Path, target: Path) -> Path:
    if target.is_dir():
        target = target / source.name
    if not target.parent.is_dir():
        raise CLIError(f"{target.parent}: output directory does not exist")
    return target


def _updated_config(config: dict, quantized: bool) -> dict:
    """GPT-OSS configs say whether the experts are MXFP4 (transformers reads quantization_config)."""
    if config.get("model_type") != "gpt_oss":
        return config
    config = dict(config)
    if quantized:
        from .models.gpt_oss import MXFP4_QUANTIZATION_CONFIG

        config["quantization_config"] = json.loads(json.dumps(MXFP4_QUANTIZATION_CONFIG))
    else:
        config.pop("quantization_config", None)
    return config


def convert(source: Path, target: Path, make_plan, *, quantized_output: bool, require_match: str | None = None,
            quiet: bool = False, **options) -> dict:
    """Convert a file or a checkpoint directory with ``make_plan(path, tensors, metadata) -> (steps, metadata)``."""
    _check_paths(source, target)
    if source.is_file():
        jobs = [(source, _target_file(source, target))]
        index = None
    else:
        files, index = _shards(source)
        target.mkdir(parents=True, exist_ok=True)
        jobs = [(source / name, target / name) for name in files]
    plans = []
    for file_in, file_out in jobs:  # plan everything first: a bad shard fails before anything is written
        tensors, metadata = read_header(file_in)
        steps, out_metadata = make_plan(file_in, tensors, metadata)
        plans.append((file_in, file_out, steps, out_metadata))
    converted = sum(1 for plan in plans for step in plan[2] if step.kind != "copy")
    if require_match is not None and converted == 0:
        total = sum(len(plan[2]) for plan in plans)
        raise CLIError(f"no tensor matches {require_match} among the {total} tensors of {source} (2-D/3-D floating-point weights only)")
    summary = {"tensors": 0, "converted": 0, "bytes_in": 0, "bytes_out": 0, "seconds": 0.0}
    for file_in, file_out, steps, out_metadata in plans:
        for key, value in convert_file(file_in, file_out, steps, out_metadata, quiet=quiet, **options).items():
            summary[key] += value
    if source.is_dir():
        # GPT-OSS configs declare MXFP4 experts (transformers then reads *_blocks / *_scales): only when they are.
        experts_quantized = any(
            step.kind == "quantize" and GPT_OSS_EXPERTS.search(step.name) for plan in plans for step in plan[2]
        )
        _finish_directory(source, target, plans, index, quantized_output and experts_quantized)
    return summary


def _finish_directory(source: Path, target: Path, plans, index: dict | None, quantized_output: bool) -> None:
    for item in source.iterdir():  # config, tokenizer, generation config, ...
        if item.is_file() and not item.name.endswith(".safetensors") and item.name != INDEX_FILE:
            if item.name == "config.json":
                try:
                    config = json.loads(item.read_text())
                except ValueError:
                    raise CLIError(f"{item}: not valid JSON") from None
                (target / item.name).write_text(json.dumps(_updated_config(config, quantized_output), indent=2) + "\n")
            else:
                shutil.copy2(item, target / item.name)
    if index is not None:
        weight_map = {}
        total = 0
        for _, file_out, steps, _ in plans:
            for step in steps:
                for name, _, _, nbytes in step.outputs:
                    weight_map[name] = file_out.name
                    total += nbytes
        new_index = {"metadata": {**index.get("metadata", {}), "total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (target / INDEX_FILE).write_text(json.dumps(new_index, indent=2) + "\n")


# =================================================================================================================
# commands
# =================================================================================================================
def cmd_quantize(args) -> int:
    from .io import METADATA_KEY
    from .spec import ScaleMode

    mode = ScaleMode.parse(args.scale_mode)
    try:
        include = re.compile(args.include)
    except re.error as error:
        raise CLIError(f"--include {args.include!r} is not a valid regular expression: {error}") from None

    def make_plan(path, tensors, metadata):
        steps = plan_quantize(path, tensors, include)
        layout = _mxfp4_layout(metadata, path)
        layout.update({s.name: {"shape": list(s.shape), "axis": s.axis} for s in steps if s.kind == "quantize"})
        out_metadata = {**metadata, "format": metadata.get("format", "pt")}
        out_metadata[METADATA_KEY] = json.dumps({"version": 1, "tensors": layout}, separators=(",", ":"))
        return steps, out_metadata

    summary = convert(Path(args.input), Path(args.output), make_plan, quantized_output=True,
                      require_match=f"--include {args.include!r}", quiet=args.quiet, scale_mode=mode)
    _report(summary, f"quantized {summary['converted']} tensors (scale mode {mode.value})", args)
    return 0


def cmd_dequantize(args) -> int:
    from .io import METADATA_KEY

    dtype = OUTPUT_DTYPES[args.dtype]

    def make_plan(path, tensors, metadata):
        layout = _mxfp4_layout(metadata, path)
        steps = plan_dequantize(path, tensors, layout, dtype)
        out_metadata = {k: v for k, v in metadata.items() if k != METADATA_KEY}
        out_metadata.setdefault("format", "pt")
        return steps, out_metadata

    summary = convert(Path(args.input), Path(args.output), make_plan, quantized_output=False,
                      require_match="an MXFP4 pair (NAME_blocks + NAME_scales)", quiet=args.quiet, dtype=dtype)
    _report(summary, f"dequantized {summary['converted']} tensors to {args.dtype}", args)
    return 0


def _report(summary: dict, what: str, args) -> None:
    if args.quiet:
        return
    rate = summary["bytes_in"] / max(summary["seconds"], 1e-9) / 1e6
    print(f"{what}: {_human(summary['bytes_in'])} -> {_human(summary['bytes_out'])} in {summary['seconds']:.1f} s "
          f"({rate:.0f} MB/s read) -> {args.output}")


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(nbytes) < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"  # pragma: no cover


def scale_histogram(scales) -> str:
    """A one-line summary of E8M0 scale bytes: the exponents that occur, with their share, and NaN/zero counts."""
    import torch

    from .spec import E8M0_BIAS, E8M0_NAN

    flat = scales.reshape(-1).to(torch.int64)
    counts = torch.bincount(flat, minlength=256)
    total = max(flat.numel(), 1)
    present = [(byte, int(counts[byte])) for byte in range(E8M0_NAN) if counts[byte]]
    top = sorted(present, key=lambda item: -item[1])[:6]
    parts = [f"2^{byte - E8M0_BIAS}:{_share(n, total)}" for byte, n in sorted(top)]
    if len(present) > len(top):
        parts.append(f"+{len(present) - len(top)} more")
    if present:
        parts.insert(0, f"range 2^{present[0][0] - E8M0_BIAS}..2^{present[-1][0] - E8M0_BIAS}")
    if counts[E8M0_NAN]:
        parts.append(f"NaN blocks: {int(counts[E8M0_NAN])}")
    return " ".join(parts)


def _share(count: int, total: int) -> str:
    share = 100 * count / total
    return f"{share:.0f}%" if share >= 0.5 else "<1%"


def cmd_inspect(args) -> int:
    from .io import BLOCKS_SUFFIX, SCALES_SUFFIX
    from .spec import BLOCK_SIZE

    path = Path(args.file)
    if not path.exists():
        raise CLIError(f"{path}: no such file or directory")
    files = [path] if path.is_file() else [path / name for name in _shards(path)[0]]
    rows = []
    total_bytes = mx_bytes = mx_elements = 0
    for file in files:
        tensors, metadata = read_header(file)
        layout = _mxfp4_layout(metadata, file)
        for name, stored in tensors.items():
            if name.endswith(SCALES_SUFFIX) and name[: -len(SCALES_SUFFIX)] + BLOCKS_SUFFIX in tensors:
                continue
            logical = name[: -len(BLOCKS_SUFFIX)] if name.endswith(BLOCKS_SUFFIX) else None
            total_bytes += stored.nbytes
            if logical is not None and logical + SCALES_SUFFIX in tensors and stored.dtype == "U8":
                scales = tensors[logical + SCALES_SUFFIX]
                total_bytes += scales.nbytes
                entry = layout.get(logical)
                shape = entry["shape"] if entry else [*stored.shape[:-2], stored.shape[-2] * BLOCK_SIZE]
                axis = entry["axis"] if entry else len(shape) - 1
                mx_bytes += stored.nbytes + scales.nbytes
                mx_elements += math.prod(shape)
                histogram = scale_histogram(read_tensor(file, scales)) if not args.no_histogram else ""
                rows.append((logical, shape, f"MXFP4 axis {axis}", stored.nbytes + scales.nbytes, histogram))
            else:
                rows.append((name, list(stored.shape), stored.dtype, stored.nbytes, ""))
    width = min(max((len(r[0]) for r in rows), default=4), 72)
    print(f"{'tensor':<{width}}  {'shape':<22} {'format':<14} {'bytes':>10}  scales (MXFP4)")
    for name, shape, fmt, nbytes, histogram in rows:
        shown = name if len(name) <= width else "..." + name[-(width - 3):]
        print(f"{shown:<{width}}  {str(list(shape)):<22} {fmt:<14} {_human(nbytes):>10}  {histogram}")
    line = f"{len(rows)} tensors, {_human(total_bytes)} in {len(files)} file(s)"
    if mx_elements:
        line += (f"; MXFP4: {mx_elements:,} elements in {_human(mx_bytes)} ({8 * mx_bytes / mx_elements:.2f} bits/element, "
                 f"{_human(2 * mx_elements)} as bf16: {2 * mx_elements / mx_bytes:.2f}x smaller)")
    print(line)
    return 0


def cmd_bench(args, rest: list[str]) -> int:
    from . import bench

    return bench.main(rest)


def cmd_demo(args) -> int:
    return run_demo(rows=args.rows)


DEMO_FEATURES = 2880
"""The demo weight is ``[rows, 2880]``: GPT-OSS's hidden size, 90 blocks per row."""


def demo_weight(rows: int, seed: int = 0):
    """A weight-like bf16 tensor ``[rows, 2880]``: Student-t (4 degrees of freedom) noise, heavier-tailed than a
    Gaussian as trained weights are, with a few rows scaled up (outlier channels) and std ~0.02."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    normal = torch.randn(rows, DEMO_FEATURES, generator=generator, dtype=torch.float64)
    chi2 = torch.randn(rows, DEMO_FEATURES, 4, generator=generator, dtype=torch.float64).pow(2).sum(-1)
    student_t = normal / torch.sqrt(chi2 / 4)
    row_scale = torch.where(torch.rand(rows, 1, generator=generator) < 0.02, 8.0, 1.0)
    return (0.02 * student_t * row_scale / math.sqrt(2)).to(torch.bfloat16)


def run_demo(rows: int = 256) -> int:
    """Quantize a generated weight in every scale mode, print the error and the bytes saved, run a small matmul."""
    import torch

    import mxfp4
    from mxfp4 import reference
    from mxfp4.spec import E2M1_MAX, E8M0_BIAS, ScaleMode

    if rows < 1:
        raise CLIError(f"--rows must be positive, got {rows}")
    started = time.perf_counter()
    weight = demo_weight(rows)
    exact = weight.double()
    dense_bytes = weight.numel() * weight.element_size()
    print(f"weight: bf16 [{rows}, {DEMO_FEATURES}] (Student-t noise, std ~0.02, 2% outlier rows), {_human(dense_bytes)}")
    print(f"{'scale mode':<11} {'rel. RMS err':>12} {'SQNR dB':>8} {'max |err|':>10} {'clipped':>8} {'MXFP4 bytes':>12} {'saved':>6} {'time':>8}")
    quantized = {}
    for mode in ScaleMode:
        t0 = time.perf_counter()
        q = mxfp4.quantize(weight, scale_mode=mode)
        seconds = time.perf_counter() - t0
        error = q.dequantize(torch.float64) - exact
        rel_rms = float(error.norm() / exact.norm())
        scale = torch.exp2(q.scales.double() - E8M0_BIAS).repeat_interleave(32, -1)[:, :DEMO_FEATURES]
        clipped = float((exact.abs() > E2M1_MAX * scale).double().mean())
        saved = 1 - q.nbytes / dense_bytes
        quantized[mode] = q
        print(f"{mode.value:<11} {rel_rms:>12.4f} {-20 * math.log10(rel_rms):>8.2f} {float(error.abs().max()):>10.3g} "
              f"{clipped:>8.2%} {_human(q.nbytes):>12} {saved:>6.1%} {1e3 * seconds:>6.0f}ms")
    print(f"MXFP4 stores {8 * quantized[ScaleMode.FLOOR].nbytes / weight.numel():.2f} bits per element (4-bit codes + one "
          f"8-bit scale per 32); bf16 stores 16.")

    generator = torch.Generator().manual_seed(1)
    activations = torch.randn(4, DEMO_FEATURES, generator=generator).to(torch.bfloat16)
    q = quantized[ScaleMode.FLOOR]
    got = mxfp4.matmul(activations, q).double()
    truth = torch.from_numpy(reference.matmul(activations.double().numpy(), q.blocks.numpy(), q.scales.numpy()))
    dense = activations.double() @ exact.T
    kernel_error = float((got - truth).norm() / truth.norm())
    quant_error = float((truth - dense).norm() / dense.norm())
    print(f"matmul [4, {DEMO_FEATURES}] @ W.T (floor): vs the float64 reference on the same MXFP4 weight: rel. error "
          f"{kernel_error:.2e} (bf16 output rounding); vs the bf16 weight: {quant_error:.4f} (the quantization error)")
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return 0


# =================================================================================================================
# entry point
# =================================================================================================================
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mxfp4", description="MXFP4 (OCP Microscaling) checkpoints: convert, inspect, benchmark.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = commands.add_parser("quantize", help="quantize the matching weights of a safetensors file or checkpoint dir")
    q.add_argument("input", metavar="IN", help=".safetensors file or checkpoint directory")
    q.add_argument("output", metavar="OUT", help="output file (or directory, for a directory input)")
    q.add_argument("--include", default=DEFAULT_INCLUDE,
                   help=f"regex (re.search) over tensor names; 2-D/3-D float tensors that match are quantized (default: {DEFAULT_INCLUDE!r}, the GPT-OSS experts)")
    q.add_argument("--scale-mode", default="floor", choices=["floor", "ceil", "mse"], help="how block scales are chosen (default: floor, OCP)")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")

    d = commands.add_parser("dequantize", help="decode every MXFP4 pair (NAME_blocks + NAME_scales) back to floats")
    d.add_argument("input", metavar="IN")
    d.add_argument("output", metavar="OUT")
    d.add_argument("--dtype", default="bf16", choices=sorted(OUTPUT_DTYPES), help="output dtype (default: bf16)")
    d.add_argument("-q", "--quiet", action="store_true")

    i = commands.add_parser("inspect", help="per-tensor table: shape, format, bytes, MXFP4 scale histogram")
    i.add_argument("file", metavar="FILE", help=".safetensors file or checkpoint directory")
    i.add_argument("--no-histogram", action="store_true", help="skip reading the scales")

    commands.add_parser("bench", help="benchmark report (python -m mxfp4.bench; options after 'bench' go to it)", add_help=False)

    m = commands.add_parser("demo", help="quantize a generated weight, show the error of each scale mode and the bytes saved")
    m.add_argument("--rows", type=int, default=256, help="rows of the [rows, 2880] demo weight (default 256)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 for any error the user can fix)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # everything after 'bench' belongs to mxfp4.bench's own parser
        try:
            return cmd_bench(None, argv[1:])
        except CLIError as error:
            return _fail(str(error))
    args = build_parser().parse_args(argv)
    handlers = {"quantize": cmd_quantize, "dequantize": cmd_dequantize, "inspect": cmd_inspect, "demo": cmd_demo}
    try:
        return handlers[args.command](args)
    except CLIError as error:
        return _fail(str(error))
    except (ValueError, TypeError, OSError) as error:  # e.g. mxfp4.io.MXFP4FormatError, a full disk
        return _fail(f"{type(error).__name__}: {error}")
    except KeyboardInterrupt:
        return _fail("interrupted (no partial output was left behind)")


def _fail(message: str) -> int:
    print(f"mxfp4: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE
