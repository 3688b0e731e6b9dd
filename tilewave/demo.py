"""``tilewave demo``: a real photograph through the whole pipeline, with the defaults.

The photograph is scikit-image's ``coffee`` (600 x 400 RGB), one of the validation
images that ``uniba-x2`` never trained on (``tools/train_uniba_x2.py``), so what the
demo shows is what the model does on an image it has not seen. Of those held-out photos
it is the one that makes the most tiles at the default tile of 256 input pixels (6).

Beside the output, the demo writes a crop of it where the photo has the most structure,
the same region upscaled with plain bicubic, and the two side by side.
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from .api import upscale

#: The demo's photograph: ``skimage.data.<PHOTO>()``, held out from uniba-x2's training.
PHOTO = "coffee"
#: Files an earlier demo (on scikit-image's retina photograph) wrote into the same folder.
_EARLIER = ("retina.png", "retina_x2.ome.zarr", "retina_x2_centre.png")


def run_demo(folder: str = "tilewave-demo", progress: bool = True) -> str:
    """Upscale scikit-image's coffee photograph (600 x 400 RGB, held out from uniba-x2's
    training) x2 with the UniBA transformer on a local Ray instance into ``folder``, and
    write crops to compare with bicubic; returns the output path. Replaces an earlier
    demo there and nothing else."""
    import imagecodecs
    from skimage import data

    os.makedirs(folder, exist_ok=True)
    for name in _EARLIER:  # the demo's own earlier results, nothing of the user's
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.isfile(path):
            os.remove(path)
    image = np.ascontiguousarray(getattr(data, PHOTO)())
    source = os.path.join(folder, f"{PHOTO}.png")
    output = os.path.join(folder, f"{PHOTO}_x2.ome.zarr")
    with open(source, "wb") as f:
        f.write(imagecodecs.png_encode(image))
    if os.path.isdir(output):  # the demo's own earlier result, nothing of the user's
        shutil.rmtree(output)
    # On Ray, as a slide's job runs, although its 6 tiles alone would run in this process
    # on a machine of 6 CPUs or more.
    report = upscale(source, output, model="uniba-x2", executor="ray", progress=progress)

    c, h, w = report.shape
    scale = h // image.shape[0]
    win = min(512 // scale, *image.shape[:2])  # a 512 x 512 crop of the output, or less
    y0, x0 = structured_window(image, win)
    crops = write_crops(image, report.array, (y0, x0), win, scale,
                        os.path.join(folder, f"{PHOTO}_x2_crop_uniba.png"),
                        os.path.join(folder, f"{PHOTO}_x2_crop_bicubic.png"),
                        os.path.join(folder, f"{PHOTO}_x2_crop_compare.png"))
    size = win * scale
    region = (f"input x {x0}-{x0 + win}, y {y0}-{y0 + win}: the window with the most "
              f"detail")
    print(f"input:    {source} (scikit-image's '{PHOTO}' photograph, {image.shape[1]} x "
          f"{image.shape[0]} RGB; held out from uniba-x2's training)")
    print(f"output:   {output}  (OME-Zarr 0.5, {w} x {h}, array '0' is (c, y, x) {report.dtype})")
    print(f"crop:     {crops[0]}  ({size} x {size} of the output, uniba-x2; {region})")
    print(f"bicubic:  {crops[1]}  (the same region of the input, upscaled x{scale} with "
          f"plain bicubic)")
    print(f"compare:  {crops[2]}  (side by side: bicubic left, uniba-x2 right)")
    print(f"ran {report.model} ({report.mode} mode) on {report.tiles} tiles, {report.workers} at "
          f"once in {report.processes} Ray worker process{'es' * (report.processes != 1)}, "
          f"in {report.seconds:.1f} s; "
          f"read it with zarr.open_array({report.array!r})")
    return output


def structured_window(image: np.ndarray, size: int, cell: int = 16) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the ``size`` x ``size`` window of ``image`` (``(h, w)`` or
    ``(h, w, c)``) with the most structure: the largest sum of gradient magnitude
    (``|dI/dx| + |dI/dy|`` of the channel mean), on a grid of ``cell``-pixel steps.

    A window larger than the image is clipped to it. Ties go to the top-left-most window.
    """
    g = np.asarray(image, dtype=np.float32)
    if g.ndim == 3:
        g = g.mean(axis=2)
    h, w = g.shape
    wy, wx = min(size, h), min(size, w)
    grad = np.zeros((h, w), np.float32)
    grad[:, 1:] += np.abs(np.diff(g, axis=1))
    grad[1:, :] += np.abs(np.diff(g, axis=0))
    # Sum per cell, then per window of cells with a summed-area table.
    ch, cw = -(-h // cell), -(-w // cell)
    padded = np.zeros((ch * cell, cw * cell), np.float64)
    padded[:h, :w] = grad
    cells = padded.reshape(ch, cell, cw, cell).sum(axis=(1, 3))
    sat = np.zeros((ch + 1, cw + 1))
    sat[1:, 1:] = cells.cumsum(axis=0).cumsum(axis=1)
    ny, nx = max(1, wy // cell), max(1, wx // cell)
    # Only windows that lie inside the image: start at most (h - wy) // cell cells in.
    my, mx = (h - wy) // cell + 1, (w - wx) // cell + 1
    sums = (sat[ny : ny + my, nx : nx + mx] - sat[:my, nx : nx + mx]
            - sat[ny : ny + my, :mx] + sat[:my, :mx])
    iy, ix = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(iy) * cell, int(ix) * cell


def bicubic_region(image: np.ndarray, origin: tuple[int, int], size: int,
                   scale: int) -> np.ndarray:
    """The ``size`` x ``size`` input region at ``origin`` of the uint8 ``(h, w, c)``
    ``image``, upscaled ``scale`` times with torch's bicubic (replicated border), as
    ``(size * scale, size * scale, c)`` uint8: what a whole-image bicubic gives there."""
    import torch
    import torch.nn.functional as F

    y0, x0 = origin
    h, w = image.shape[:2]
    m = 2  # the bicubic kernel reaches 2 input pixels
    ya, xa = max(0, y0 - m), max(0, x0 - m)
    yb, xb = min(h, y0 + size + m), min(w, x0 + size + m)
    part = torch.from_numpy(np.ascontiguousarray(image[ya:yb, xa:xb].transpose(2, 0, 1)))
    with torch.inference_mode():
        up = F.interpolate(part[None].float(), scale_factor=scale, mode="bicubic",
                           align_corners=False)[0]
    oy, ox = (y0 - ya) * scale, (x0 - xa) * scale
    up = up[:, oy : oy + size * scale, ox : ox + size * scale]
    return np.ascontiguousarray(np.rint(up.clamp(0, 255).numpy()).astype(np.uint8).transpose(1, 2, 0))


def write_crops(image: np.ndarray, array_path: str, origin: tuple[int, int], size: int,
                scale: int, model_png: str, bicubic_png: str, compare_png: str
                ) -> tuple[str, str, str]:
    """Write the output's crop over the input region ``origin``/``size``, the same region
    upscaled with bicubic, and both side by side (bicubic | model, a white gap between);
    reads only the crop from the output array. Returns the three paths."""
    import imagecodecs
    import zarr

    y0, x0 = origin
    arr = zarr.open_array(array_path, mode="r")
    n = size * scale
    model = np.asarray(arr[:, y0 * scale : y0 * scale + n, x0 * scale : x0 * scale + n])
    model = np.ascontiguousarray(model.transpose(1, 2, 0))
    bicubic = bicubic_region(image, origin, size, scale)
    gap = np.full((model.shape[0], 8, model.shape[2]), 255, np.uint8)
    both = np.ascontiguousarray(np.concatenate([bicubic, gap, model], axis=1))
    for path, pixels in ((model_png, model), (bicubic_png, bicubic), (compare_png, both)):
        with open(path, "wb") as f:
            f.write(imagecodecs.png_encode(pixels))
    return model_png, bicubic_png, compare_png
