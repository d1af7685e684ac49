"""The image helpers every layer shares: the grid of samples and PSNR."""

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import png_header_only

from t2i.images import MAX_SIDE, image_grid, load_image, psnr, read_image_size


def test_image_grid_places_tiles_row_major_with_white_gaps():
    images = -torch.ones(5, 1, 3, 4)  # five black 4x3 grey tiles
    images[4] = 1.0  # the last one white
    grid = np.asarray(image_grid(images, cols=2, pad=1))
    assert grid.shape == (3 * 4 + 1, 2 * 5 + 1, 3)  # 3 rows of 2: (H + pad), (W + pad), RGB
    assert (grid[0] == 255).all() and (grid[:, 0] == 255).all()  # the gaps are white
    assert (grid[1:4, 1:5] == 0).all()  # tile 0, top left
    assert (grid[9:12, 1:5] == 255).all() and (grid[9:12, 6:10] == 255).all()  # tile 4, no 5th
    assert (grid[5:8, 6:10] == 0).all()  # tile 3: row 1, column 1
    assert image_grid(images[:2], cols=8, pad=0).size == (8, 3)  # no wider than the tiles


def test_psnr_known_values_and_bad_input():
    x = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    assert psnr(x, x + 0.1) == pytest.approx(10 * np.log10(4 / 0.01), rel=1e-9)
    assert psnr(x, x) == float("inf")
    y = x + 0.1
    y[1] += 0.1  # per image (26.0 and 20.0 dB), then the mean; not the PSNR of the pooled MSE
    assert psnr(x, y) == pytest.approx((10 * np.log10(4 / 0.01) + 10 * np.log10(4 / 0.04)) / 2)
    assert psnr(x + 0.1, x, value_range=(0.0, 1.0)) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="one shape"):
        psnr(x, x[:1])


def test_init_images_are_checked_from_their_header_before_decoding(tmp_path):
    """A format outside the allow-list, a side past MAX_SIDE, and a header that claims
    13000x13000 over a few bytes (a decompression bomb) are refused without decoding."""
    bmp = tmp_path / "x.bmp"
    Image.new("RGB", (8, 8)).save(bmp)
    with pytest.raises(ValueError, match=r"as an image \(PNG, JPEG, WEBP\)"):
        load_image(bmp)
    wide = tmp_path / "wide.png"
    Image.new("L", (MAX_SIDE + 1, 2)).save(wide)
    with pytest.raises(ValueError, match=f"is {MAX_SIDE + 1}x2; each side"):
        read_image_size(wide)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(13000, 13000))
    for read in (read_image_size, load_image):
        with pytest.raises(ValueError, match="13000x13000"):
            read(bomb)
