"""Image grids, word-attention overlays and the HTML gallery."""

import os

import numpy as np
import pytest
from PIL import Image

from mirrorgan_jax import visualize as vis


def test_to_uint8_maps_range_and_rounding():
    x = np.array([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0])
    np.testing.assert_array_equal(vis.to_uint8(x), [0, 0, 128, 255, 255, 255])
    np.testing.assert_array_equal(vis.to_uint8(x, rounding="floor"), [0, 0, 127, 254, 255, 255])


def test_image_grid_layout_and_values(tmp_path):
    n, h, w = 5, 4, 6
    images = np.stack([np.full((h, w, 3), -1.0 + 0.5 * i) for i in range(n)])  # 0, 64, 128, ...
    grid = vis.image_grid(images, ncols=3, padding=2, pad_value=7)
    assert grid.dtype == np.uint8 and grid.shape == (2 * (h + 2) + 2, 3 * (w + 2) + 2, 3)
    for i in range(n):
        r, c = divmod(i, 3)
        top, left = 2 + r * (h + 2), 2 + c * (w + 2)
        cell = grid[top : top + h, left : left + w]
        assert np.all(cell == vis.to_uint8(-1.0 + 0.5 * i))
    assert np.all(grid[:2] == 7) and np.all(grid[:, :2] == 7)
    assert np.all(grid[8:12, 18:24] == 7)  # the empty sixth cell
    path = tmp_path / "grid.png"
    vis.save_png(path, grid)
    with Image.open(path) as png:
        np.testing.assert_array_equal(np.asarray(png), grid)
    with pytest.raises(ValueError, match="images"):
        vis.image_grid(np.zeros((4, 4, 3)))


def test_attention_overlay_brightens_the_attended_corner(tmp_path):
    image = np.zeros((32, 32, 3), np.float32)  # mid grey
    attn = np.zeros((8, 8, 6), np.float32)  # T = 6 steps, caption of 3 words
    attn[:2, :2, 0] = 1.0  # word 0: top-left
    attn[-2:, -2:, 1] = 1.0  # word 1: bottom-right
    attn[:, :, 2] = 1.0 / 64  # word 2: flat
    path = tmp_path / "attn.png"
    out = vis.attention_figure(image, attn, ["a", "small", "bird"], label_height=16, path=path)
    assert out.dtype == np.uint8 and out.shape == (16 + 32, 4 * 32 + 3 * 2, 3)
    with Image.open(path) as png:
        np.testing.assert_array_equal(np.asarray(png), out)

    def column(j):  # j = 0 is the image itself
        left = j * (32 + 2)
        return out[16:, left : left + 32].astype(int)

    assert np.all(column(0) == 128)
    w0, w1, w2 = column(1), column(2), column(3)
    assert w0[:4, :4].mean() > 200 and w0[-4:, -4:].mean() < 60
    assert w1[-4:, -4:].mean() > 200 and w1[:4, :4].mean() < 60
    assert w0[:4, :4].mean() > column(0)[:4, :4].mean()
    # a flat map normalises to zero: the image darkened uniformly
    assert np.ptp(w2) == 0 and w2[0, 0, 0] == round((1 - vis.ATTNGAN_ALPHA) * 128)
    # labels are drawn in the band above the word columns only
    assert out[:16, 34:66].max() > 0 and out[:16, :32].max() == 0


def test_attention_overlay_errors_and_vis_size():
    out = vis.attention_figure(np.zeros((16, 16, 3)), np.ones((4, 4, 2)), ["x"], vis_size=24)
    assert out.shape == (16 + 24, 2 * 24 + 2, 3)
    with pytest.raises(ValueError, match="3 words"):
        vis.attention_figure(np.zeros((8, 8, 3)), np.ones((4, 4, 2)), ["a", "b", "c"])


def test_gallery_escapes_captions_and_links_existing_files(tmp_path):
    os.makedirs(tmp_path / "img")
    names = ["img/0_s0.png", "img/0_s1.png", "img/0 attn.png"]
    for name in names:
        vis.save_png(tmp_path / name, np.zeros((4, 4, 3), np.uint8))
    entries = [
        {
            "caption": 'a <b>red</b> bird & "friends"',
            "images": names[:2],
            "attention": names[2],
            "unknown_words": ["<zork>"],
        },
        {"caption": "plain", "images": [names[0]]},
    ]
    path = vis.write_gallery(tmp_path, entries, title="T & t")
    assert path == os.path.join(tmp_path, "index.html")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert "a &lt;b&gt;red&lt;/b&gt; bird &amp; &quot;friends&quot;" in text
    assert "<b>red</b>" not in text and "&lt;zork&gt;" in text and "T &amp; t" in text
    assert "http" not in text and "<script" not in text and "<link" not in text
    import re

    links = set(re.findall(r'(?:src|href)="([^"]+)"', text))
    assert links == {"img/0_s0.png", "img/0_s1.png", "img/0%20attn.png"}
    from urllib.parse import unquote

    assert all(os.path.isfile(tmp_path / unquote(link)) for link in links)

    with pytest.raises(FileNotFoundError, match="missing.png"):
        vis.write_gallery(tmp_path, [{"caption": "x", "images": ["missing.png"]}])
    with pytest.raises(ValueError, match="relative"):
        vis.write_gallery(tmp_path, [{"caption": "x", "images": [str(tmp_path / names[0])]}])
