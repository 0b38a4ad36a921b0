"""Drawing for sampling and summaries: image grids, word-attention maps, an offline HTML gallery.

numpy + PIL (+ matplotlib colormaps on request) only; inputs are host arrays (numpy or JAX).

- `to_uint8`, `image_grid`, `save_png`: images in [-1, 1] -> uint8, a padded grid (torchvision's
  `make_grid` layout), PNG files.
- `attention_figure`: one caption's word attention drawn as AttnGAN draws it
  (`AttnGAN:code/miscc/utils.py:build_super_images`): the image, then for each word up to the
  caption length its attention map, upsampled to the image size and smoothed with a Gaussian
  (`pyramid_expand(sigma=20)` at 256 px), min-max normalised, and pasted over the image with a
  constant alpha (PIL mask 180, as `build_super_images2`), the word written above it.
- `write_gallery`: a self-contained `index.html` (relative links, inline CSS, no scripts).
"""

from __future__ import annotations

import html
import math
import os
import urllib.parse
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

# AttnGAN's paste mask value (build_super_images2): attention map weight 180/255 over the image.
ATTNGAN_ALPHA = 180.0 / 255.0


def to_uint8(images: Any, rounding: str = "round") -> np.ndarray:
    """Maps values in [-1, 1] to uint8 [0, 255] (clipped first).

    rounding="round" rounds to nearest (as torchvision's save_image); "floor" truncates
    (`((x + 1) * 127.5).astype(uint8)`, as the official sampling code saves images).
    """
    x = (np.clip(np.asarray(images, np.float32), -1.0, 1.0) + 1.0) * 127.5
    if rounding == "round":
        x = np.round(x)
    elif rounding != "floor":
        raise ValueError(f"to_uint8: rounding must be 'round' or 'floor', got {rounding!r}")
    return x.astype(np.uint8)


def image_grid(
    images: Any, ncols: int = 8, padding: int = 2, pad_value: int = 0, rounding: str = "round"
) -> np.ndarray:
    """Grid of images [N, H, W, C] in [-1, 1] (C = 1 or 3) -> uint8 [rows*(H+p)+p, cols*(W+p)+p, C].

    min(ncols, N) columns, ceil(N / cols) rows, `padding` pixels of `pad_value` around every image
    (torchvision's make_grid layout); empty cells of the last row stay `pad_value`.
    """
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(f"image_grid: expected images [N, H, W, 1|3] with N >= 1, got {x.shape}")
    if ncols < 1 or padding < 0:
        raise ValueError(f"image_grid: need ncols >= 1 and padding >= 0, got {ncols}, {padding}")
    n, h, w, c = x.shape
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    grid = np.full(
        (rows * (h + padding) + padding, cols * (w + padding) + padding, c), pad_value, np.uint8
    )
    pixels = to_uint8(x, rounding)
    for i in range(n):
        r, col = divmod(i, cols)
        top = padding + r * (h + padding)
        left = padding + col * (w + padding)
        grid[top : top + h, left : left + w] = pixels[i]
    return grid


def save_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes a uint8 array [H, W], [H, W, 1] or [H, W, 3] as PNG (parent folder must exist)."""
    a = np.asarray(array)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (1, 3)):
        raise ValueError(
            f"save_png({os.fspath(path)!r}): expected uint8 [H, W(, 1|3)], got {a.dtype} {a.shape}"
        )
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    Image.fromarray(a).save(path, format="PNG")


def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """[n, n] matrix of a 1-D Gaussian (truncated at 4 sigma, edges reflected as scipy.ndimage)."""
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    src = np.arange(n)[:, None] + offsets[None, :]  # [n, 2r+1]
    src = np.mod(src, 2 * n)
    src = np.where(src < n, src, 2 * n - 1 - src)  # reflect about the edges
    mat = np.zeros((n, n), np.float64)
    np.add.at(mat, (np.repeat(np.arange(n), offsets.size), src.ravel()), np.tile(weights, n))
    return mat


def _expand_map(attn: np.ndarray, size: tuple[int, int], sigma: float) -> np.ndarray:
    """Attention [h, w] -> [H, W] in [0, 1]: bilinear upsample, Gaussian smoothing, min-max."""
    big = Image.fromarray(attn.astype(np.float32)).resize(
        (size[1], size[0]), Image.Resampling.BILINEAR
    )
    m = np.asarray(big, np.float64)  # [H, W]
    if sigma > 0:
        m = _blur_matrix(size[0], sigma) @ m @ _blur_matrix(size[1], sigma).T
    lo, hi = m.min(), m.max()
    # A flat map (up to resampling round-off) carries no location: draw it as zeros rather
    # than stretching the round-off to [0, 1].
    if hi - lo <= 1e-5 * max(abs(hi), abs(lo), 1e-12):
        return np.zeros_like(m)
    return (m - lo) / (hi - lo)


def _fit_label(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    """`text`, shortened with '..' until it fits in `width` pixels in the default font."""
    if draw.textlength(text) <= width:
        return text
    while text and draw.textlength(text + "..") > width:
        text = text[:-1]
    return text + ".."


def attention_figure(
    image: Any,
    attention: Any,
    words: Sequence[str],
    vis_size: int | None = None,
    alpha: float = ATTNGAN_ALPHA,
    smooth_sigma: float | None = None,
    cmap: str | None = None,
    padding: int = 2,
    label_height: int = 16,
    path: str | os.PathLike | None = None,
) -> np.ndarray:
    """One caption's word attention over its image, as a uint8 strip [label_height + S, ..., 3].

    image: [H, W, 3] in [-1, 1]; attention: [h, w, T] word attention of one sample (a
    NextStageGenerator's map); words: the caption's words, len(words) <= T (pads are not drawn).
    Columns: the image, then one per word: the map upsampled to S x S (S = vis_size, default the
    image's size), Gaussian-smoothed with `smooth_sigma` pixels (default 20 * S / 256, AttnGAN's
    sigma at 256 px; 0 disables), normalised to [0, 1], grey (or `cmap`, a matplotlib colormap
    name), and blended over the image with weight `alpha`; "j:word" above each word column.
    Columns are separated by `padding` black pixels. Saved as PNG when `path` is given.
    """
    img = np.asarray(image, np.float32)
    att = np.asarray(attention, np.float32)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"attention_figure: expected image [H, W, 3], got {img.shape}")
    if att.ndim != 3:
        raise ValueError(f"attention_figure: expected attention [h, w, T], got {att.shape}")
    if len(words) > att.shape[-1]:
        raise ValueError(
            f"attention_figure: {len(words)} words but attention has only {att.shape[-1]} steps"
        )
    size = (img.shape[0], img.shape[1]) if vis_size is None else (vis_size, vis_size)
    sigma = 20.0 * size[0] / 256.0 if smooth_sigma is None else smooth_sigma
    # AttnGAN only smooths when the map is upsampled.
    if att.shape[0] >= size[0] and att.shape[1] >= size[1]:
        sigma = 0.0

    base = to_uint8(img)
    if base.shape[:2] != size:
        base = np.asarray(
            Image.fromarray(base).resize((size[1], size[0]), Image.Resampling.BILINEAR)
        )
    base_f = base.astype(np.float64)
    colormap = None
    if cmap is not None:
        import matplotlib

        colormap = matplotlib.colormaps[cmap]

    columns = [base]
    for j in range(len(words)):
        m = _expand_map(att[:, :, j], size, sigma)  # [S, S] in [0, 1]
        if colormap is None:
            layer = np.repeat(m[:, :, None] * 255.0, 3, axis=2)
        else:
            layer = colormap(m)[:, :, :3] * 255.0
        merged = (1.0 - alpha) * base_f + alpha * layer
        columns.append(np.clip(np.round(merged), 0, 255).astype(np.uint8))

    h, w = size
    width = len(columns) * w + (len(columns) - 1) * padding
    canvas = np.zeros((label_height + h, width, 3), np.uint8)
    for i, col in enumerate(columns):
        left = i * (w + padding)
        canvas[label_height:, left : left + w] = col
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    for j, word in enumerate(words):
        left = (j + 1) * (w + padding)
        draw.text((left + 1, 1), _fit_label(draw, f"{j}:{word}", w - 2), fill=(255, 255, 255))
    out = np.asarray(pil).copy()
    if path is not None:
        save_png(path, out)
    return out


def _check_link(out_dir: str, rel: Any, where: str, check_files: bool) -> str:
    if not isinstance(rel, str) or not rel:
        raise ValueError(f"write_gallery: {where} must be a non-empty relative path, got {rel!r}")
    if os.path.isabs(rel) or "://" in rel or rel.startswith(("/", "\\")):
        raise ValueError(f"write_gallery: {where} must be relative to {out_dir!r}, got {rel!r}")
    if check_files and not os.path.isfile(os.path.join(out_dir, rel)):
        raise FileNotFoundError(f"write_gallery: {where} {rel!r} does not exist under {out_dir!r}")
    return html.escape(urllib.parse.quote(rel.replace(os.sep, "/")), quote=True)


_GALLERY_CSS = """
body { font-family: sans-serif; background: #fafafa; color: #222; margin: 1.5em; }
.entry { background: #fff; border: 1px solid #ddd; border-radius: 4px; margin: 0 0 1.2em 0;
         padding: 0.8em; }
.caption { font-size: 1.05em; margin: 0 0 0.5em 0; }
.unknown { color: #a33; font-size: 0.9em; margin: 0 0 0.5em 0; }
.stages { display: flex; flex-wrap: wrap; gap: 0.6em; align-items: flex-end; }
figure { margin: 0; text-align: center; }
figcaption { font-size: 0.8em; color: #666; }
img { image-rendering: pixelated; border: 1px solid #ccc; }
.attention img { max-width: 100%; }
"""


def write_gallery(
    out_dir: str | os.PathLike,
    entries: Sequence[Mapping[str, Any]],
    title: str = "MirrorGAN samples",
    filename: str = "index.html",
    check_files: bool = True,
) -> str:
    """Writes `out_dir/filename`, a self-contained HTML page of sampled captions; returns its path.

    Each entry: {"caption": str, "images": [relative png path per stage], "attention": relative
    png path or None (optional), "unknown_words": [str] (optional, words not in the vocabulary)}.
    Paths are relative to out_dir (checked to exist unless check_files=False); captions and words
    are HTML-escaped. No external CSS/JS, so the page opens offline.
    """
    out = os.fspath(out_dir)
    if not os.path.isdir(out):
        raise FileNotFoundError(f"write_gallery: output folder {out!r} does not exist")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_GALLERY_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for n, entry in enumerate(entries):
        if "caption" not in entry or "images" not in entry:
            raise ValueError(
                f"write_gallery: entry {n} needs keys 'caption' and 'images', got {sorted(entry)}"
            )
        caption = str(entry["caption"])
        images = entry["images"]
        if isinstance(images, str) or not isinstance(images, Sequence):
            raise ValueError(
                f"write_gallery: entry {n} 'images' must be a list of paths, got {images!r}"
            )
        parts.append('<div class="entry">')
        parts.append(f'<p class="caption">{n}. {html.escape(caption)}</p>')
        unknown = list(entry.get("unknown_words") or [])
        if unknown:
            words = ", ".join(html.escape(str(w)) for w in unknown)
            parts.append(f'<p class="unknown">Not in the vocabulary (dropped): {words}</p>')
        parts.append('<div class="stages">')
        for s, rel in enumerate(images):
            href = _check_link(out, rel, f"entry {n} stage {s} image", check_files)
            alt = html.escape(f"stage {s}: {caption}", quote=True)
            parts.append(
                f'<figure><a href="{href}"><img src="{href}" alt="{alt}"></a>'
                f"<figcaption>stage {s}</figcaption></figure>"
            )
        parts.append("</div>")
        if entry.get("attention"):
            href = _check_link(out, entry["attention"], f"entry {n} attention", check_files)
            alt = html.escape(f"word attention: {caption}", quote=True)
            parts.append(
                f'<figure class="attention"><a href="{href}"><img src="{href}" alt="{alt}"></a>'
                "<figcaption>word attention</figcaption></figure>"
            )
        parts.append("</div>")
    parts += ["</body>", "</html>", ""]
    path = os.path.join(out, filename)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return path
