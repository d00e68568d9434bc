"""MXFP4Tensor: packed E2M1 blocks + E8M0 scales, with the logical shape and quantized axis they stand for."""

from __future__ import annotations

import torch

from .spec import BLOCK_SIZE, BYTES_PER_BLOCK, num_blocks


class MXFP4Tensor:
    """An MXFP4 tensor.

    Storage is the GPT-OSS checkpoint layout: the quantized axis is moved last and split into blocks of 32.

    Attributes:
        blocks: ``uint8 [*batch, G, 16]``, two E2M1 codes per byte (element 2i in the low nibble).
        scales: ``uint8 [*batch, G]``, one E8M0 byte per block.
        shape: the logical shape (``torch.Size``), with the quantized axis at ``axis`` and its true length K
            (``G = ceil(K / 32)``; a partial last block is zero-padded).
        axis: the quantized axis of the logical shape (non-negative).

    A weight ``[N, K]`` quantized along K (``axis=1``) has blocks ``[N, G, 16]``: exactly
    ``model.layers.0.mlp.experts.down_proj_blocks[e]`` of a GPT-OSS checkpoint.

    >>> w = MXFP4Tensor.from_blocks(torch.zeros(4, 2, 16, dtype=torch.uint8), torch.full((4, 2), 127, dtype=torch.uint8))
    >>> w.shape, w.axis
    (torch.Size([4, 64]), 1)
    """

    __slots__ = ("blocks", "scales", "shape", "axis")

    def __init__(self, blocks: torch.Tensor, scales: torch.Tensor, shape, axis: int):
        self.blocks = blocks
        self.scales = scales
        self.shape = torch.Size(shape)
        self.axis = axis

    # --- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_blocks(cls, blocks: torch.Tensor, scales: torch.Tensor, shape=None, axis: int = -1) -> "MXFP4Tensor":
        """Wrap raw checkpoint tensors, validating them.

        Args:
            blocks: ``uint8 [*batch, G, 16]``.
            scales: ``uint8 [*batch, G]`` on the same device.
            shape: the logical shape; default: the quantized axis holds ``G * 32`` elements.
            axis: the quantized axis of ``shape``.

        Raises:
            TypeError: blocks or scales are not uint8 torch tensors.
            ValueError: their shapes do not fit each other or ``shape``; they are on different devices.
        """
        for name, t in (("blocks", blocks), ("scales", scales)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dtype != torch.uint8:
                raise TypeError(f"{name} must be uint8 (packed MXFP4 bytes), got {t.dtype}")
        if blocks.dim() < 2 or blocks.shape[-1] != BYTES_PER_BLOCK:
            raise ValueError(f"blocks must have shape [..., G, {BYTES_PER_BLOCK}], got {tuple(blocks.shape)}")
        if tuple(scales.shape) != tuple(blocks.shape[:-1]):
            raise ValueError(
                f"scales {tuple(scales.shape)} do not match blocks {tuple(blocks.shape)}: expected scales of shape "
                f"{tuple(blocks.shape[:-1])} (one byte per block of {BLOCK_SIZE})"
            )
        if blocks.device != scales.device:
            raise ValueError(f"blocks are on {blocks.device} but scales on {scales.device}")
        batch, groups = tuple(blocks.shape[:-2]), blocks.shape[-2]
        ndim = len(batch) + 1
        if shape is None:
            axis = _normalize_axis(axis, ndim)
            shape = batch[:axis] + (groups * BLOCK_SIZE,) + batch[axis:]
        else:
            shape = tuple(int(s) for s in shape)
            if len(shape) != ndim:
                raise ValueError(f"shape {shape} has {len(shape)} dims but blocks {tuple(blocks.shape)} imply {ndim}")
            axis = _normalize_axis(axis, ndim)
            expected_batch = shape[:axis] + shape[axis + 1 :]
            if expected_batch != batch or num_blocks(shape[axis]) != groups or shape[axis] == 0:
                raise ValueError(
                    f"blocks {tuple(blocks.shape)} cannot hold a tensor of shape {shape} quantized along axis {axis}: "
                    f"expected blocks {expected_batch + (num_blocks(shape[axis]), BYTES_PER_BLOCK)}"
                )
        return cls(blocks, scales, shape, axis)

    # --- properties ---------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.blocks.device

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def length(self) -> int:
        """Logical length K of the quantized axis."""
        return self.shape[self.axis]

    @property
    def num_blocks(self) -> int:
        return self.blocks.shape[-2]

    @property
    def nbytes(self) -> int:
        """Bytes of storage (blocks + scales): ~4.25 bits per element."""
        return self.blocks.numel() * self.blocks.element_size() + self.scales.numel() * self.scales.element_size()

    def numel(self) -> int:
        return self.shape.numel()

    # --- conversion ---------------------------------------------------------------------------------------------
    def to(self, device) -> "MXFP4Tensor":
        """A copy on ``device`` (self if already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return MXFP4Tensor(self.blocks.to(device), self.scales.to(device), self.shape, self.axis)

    def cpu(self) -> "MXFP4Tensor":
        return self.to("cpu")

    def cuda(self) -> "MXFP4Tensor":
        return self.to("cuda")

    def dequantize(self, dtype: torch.dtype = torch.bfloat16, *, backend=None) -> torch.Tensor:
        """The logical tensor in ``dtype``; see :func:`mxfp4.dequantize`."""
        from .ops import dequantize

        return dequantize(self, dtype, backend=backend)

    def __getitem__(self, index) -> "MXFP4Tensor":
        """Index the leading (non-quantized) dims of storage, e.g. ``experts[e]``; the quantized axis stays whole."""
        if self.axis != self.ndim - 1:
            raise NotImplementedError("indexing is supported for tensors quantized along their last axis")
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis for i in index) or len(index) > self.ndim - 1:
            raise IndexError(f"index {index!r} reaches into the quantized axis of an MXFP4Tensor of shape {tuple(self.shape)}")
        # Index the batch dims only: the trailing [G, 16] / [G] stay whole whatever the index looks like.
        blocks = self.blocks[index + (Ellipsis, slice(None), slice(None))]
        scales = self.scales[index + (Ellipsis, slice(None))]
        shape = tuple(blocks.shape[:-2]) + (self.length,)
        return MXFP4Tensor(blocks, scales, shape, len(shape) - 1)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return (
            f"MXFP4Tensor(shape={tuple(self.shape)}, axis={self.axis}, blocks={tuple(self.blocks.shape)}, "
            f"device={self.device}, nbytes={self.nbytes})"
        )


def _normalize_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a {ndim}-d tensor")
    return axis % ndim
