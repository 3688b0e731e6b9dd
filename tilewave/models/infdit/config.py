"""The shape of an Inf-DiT network, as its SwissArmyTransformer checkpoint states it.

Kept free of torch, so that a checkpoint folder can be recognised and described on the
driver. The defaults are the released model's: the arguments its inference script
passes (28 layers of width 1280, 16 heads, 4-pixel patches, 128-pixel blocks, images
of 512 pixels in training, a 768-wide CLIP image vector, x4).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InfDiTConfig:
    """Inf-DiT's architecture settings; lengths are in output (high-resolution) pixels
    unless they say otherwise."""

    layers: int = 28
    hidden: int = 1280
    heads: int = 16
    patch: int = 4
    #: The noisy image and the bicubic-upsampled input, concatenated.
    in_channels: int = 6
    out_channels: int = 3
    #: One attention block's side (``--image-block-size``).
    block_px: int = 128
    #: The training crop (``--image-size``); it sets the rotary table's size.
    image_size: int = 512
    scale: int = 4
    #: The CLIP image embedding's width (``--vector-dim``).
    vector_dim: int = 768
    #: SwissArmyTransformer's unused learned position table keeps this many rows.
    max_sequence_length: int = 256
    #: Low-resolution pixels per cross-attention token side (``proj_lr``'s kernel).
    lr_patch: int = 2
    #: Width of the sinusoidal noise-level features the time embedding reads.
    time_channels: int = 192
    #: Rotary positions cover 8 training crops per side (``--random-position``), else 2.
    random_position: bool = True
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.hidden % self.heads or (self.hidden // self.heads) % 4:
            raise ValueError(f"hidden size {self.hidden} does not split into {self.heads} heads "
                             "of a width divisible by 4")
        if self.block_px % (self.patch * self.scale) or self.block_px % self.scale:
            raise ValueError(f"block size {self.block_px} is not a whole number of patches at x{self.scale}")
        if (self.block_px // self.scale) % self.lr_patch:
            raise ValueError(f"block size {self.block_px} is not a whole number of low-resolution tokens")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def tokens_per_side(self) -> int:
        """Tokens along one side of a block."""
        return self.block_px // self.patch

    @property
    def lr_block(self) -> int:
        """Low-resolution tokens along one side of a block."""
        return self.block_px // self.scale // self.lr_patch

    @property
    def input_block(self) -> int:
        """A block's side in input (low-resolution) pixels: tiles are multiples of it."""
        return self.block_px // self.scale

    @property
    def rope_size(self) -> int:
        """Rows (and columns) of the rotary table."""
        return self.image_size // self.patch * (8 if self.random_position else 2)

    @property
    def rope_wrap(self) -> int:
        """Token positions are taken modulo this when sampling (as the release does)."""
        return 8 * self.image_size // self.patch
