"""The demo's preview: the crop goes where the detail is, and its bicubic comparison is
what a whole-image bicubic gives there. Unit level: no Ray, no model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tilewave.demo import bicubic_region, structured_window


def _textured(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


@pytest.mark.parametrize("textured_side", ["left", "right", "top", "bottom"])
def test_window_lands_in_the_textured_half(textured_side):
    h, w = 192, 320
    image = np.full((h, w, 3), 128, np.uint8)  # flat, apart from the textured half
    if textured_side == "left":
        image[:, : w // 2] = _textured((h, w // 2, 3))
    elif textured_side == "right":
        image[:, w // 2 :] = _textured((h, w // 2, 3))
    elif textured_side == "top":
        image[: h // 2] = _textured((h // 2, w, 3))
    else:
        image[h // 2 :] = _textured((h - h // 2, w, 3))
    y, x = structured_window(image, 64)
    window = image[y : y + 64, x : x + 64]
    # Entirely inside the textured half: no flat (constant 128) row or column in it.
    assert (window.std(axis=(0, 2)) > 10).all() and (window.std(axis=(1, 2)) > 10).all()


def test_window_finds_a_small_textured_patch_and_stays_inside():
    image = np.full((200, 300), 50, np.uint8)
    image[120:180, 200:260] = _textured((60, 60), seed=1)  # not on the 16-pixel grid
    y, x = structured_window(image, 64)
    assert 0 <= y <= 200 - 64 and 0 <= x <= 300 - 64
    # The window covers most of the patch (grid steps of 16 can miss some of it).
    covered = image[y : y + 64, x : x + 64] != 50
    assert covered.sum() >= 0.6 * 60 * 60


def test_window_larger_than_the_image_is_the_image():
    assert structured_window(_textured((40, 50)), 256) == (0, 0)


@pytest.mark.parametrize("origin", [(0, 0), (10, 37), (40, 56)])
def test_bicubic_region_equals_the_whole_image_cropped(origin):
    image = _textured((64, 80, 3), seed=2)
    size, scale = 24, 2
    whole = F.interpolate(torch.from_numpy(image.transpose(2, 0, 1))[None].float(),
                          scale_factor=scale, mode="bicubic", align_corners=False)[0]
    whole = np.rint(whole.clamp(0, 255).numpy()).astype(np.uint8).transpose(1, 2, 0)
    y, x = origin
    expected = whole[y * scale : (y + size) * scale, x * scale : (x + size) * scale]
    got = bicubic_region(image, origin, size, scale)
    assert got.shape == (size * scale, size * scale, 3) and got.flags.c_contiguous
    # Float rounding differs with the tensor's extent; at most one uint8 step.
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
