"""One image loader for training data and inference: odd modes and formats read to the pixels
a viewer shows, and the same file gives the same pixels through `mio prepare`'s reader and
through `MIO.tokenize`'s."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from mio.api import load_image
from mio.media.image import ImageFileError, open_image, to_rgb


def _file(tmp_path, name: str, image: PILImage.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=save.pop("format", name.rsplit(".", 1)[1].upper()), **save)
    (tmp_path / name).write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _odd_images() -> dict[str, tuple[PILImage.Image, dict]]:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[:4, :, 3] = 255, 255  # red on the top half, transparent below
    gray16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    palette = PILImage.fromarray(rgba[..., :3]).convert("P")
    palette.info["transparency"] = 0
    return {
        "rgba.png": (PILImage.fromarray(rgba, "RGBA"), {}),
        "la.png": (PILImage.fromarray(rgba[..., [0, 3]], "LA"), {}),
        "palette.png": (palette, {"transparency": 0}),
        "gray16.png": (PILImage.fromarray(gray16), {}),
        "cmyk.jpg": (PILImage.new("CMYK", (8, 8), (0, 255, 255, 0)), {"format": "JPEG"}),
    }


@pytest.mark.parametrize("name", sorted(_odd_images()))
def test_the_same_file_gives_the_same_pixels_from_a_path_and_from_bytes(tmp_path, name):
    image, save = _odd_images()[name]
    data = _file(tmp_path, name, image, **save)
    from_path = open_image(tmp_path / name)
    assert from_path.mode == "RGB" and from_path.size == (8, 8)
    assert np.array_equal(np.asarray(from_path), np.asarray(open_image(data)))
    assert np.array_equal(np.asarray(from_path), np.asarray(load_image(tmp_path / name).image))


def test_transparency_is_composited_on_white_and_16_bit_scaled(tmp_path):
    images = _odd_images()
    _file(tmp_path, "rgba.png", images["rgba.png"][0])
    pixels = np.asarray(open_image(tmp_path / "rgba.png"))
    assert pixels[0, 0].tolist() == [255, 0, 0] and pixels[7, 7].tolist() == [255, 255, 255]
    _file(tmp_path, "gray16.png", images["gray16.png"][0])
    gray = np.asarray(open_image(tmp_path / "gray16.png"))[..., 0]
    assert gray[0, 0] == 0 and 0 < gray[4, 4] < 255 and gray[7, 7] > gray[4, 4]


def test_exif_orientation_is_applied(tmp_path):
    wide = PILImage.new("RGB", (16, 8), (0, 0, 255))
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    _file(tmp_path, "rotated.jpg", wide, format="JPEG", exif=exif.tobytes())
    assert open_image(tmp_path / "rotated.jpg").size == (8, 16)


def test_a_nan_pixel_does_not_blacken_a_float_image(tmp_path):
    values = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)
    values[0, 0] = np.nan
    _file(tmp_path, "float.tiff", PILImage.fromarray(values, "F"))
    gray = np.asarray(open_image(tmp_path / "float.tiff"))[..., 0]
    assert gray[7, 7] == 255 and gray[4, 4] > 100


def test_images_without_pixels_or_too_many_are_refused(tmp_path):
    with pytest.raises(ImageFileError, match="cannot read image|has no pixels"):
        open_image(_file(tmp_path, "empty.gif", PILImage.new("RGB", (1, 1)), format="GIF")[:20])
    for size in ((0, 0), (0, 5)):  # an image made in memory, not read from a file
        with pytest.raises(ImageFileError, match=f"image is {size[0]}x{size[1]}, it has no pixels"):
            to_rgb(PILImage.new("RGB", size))
    big = _file(tmp_path, "big.png", PILImage.new("L", (100, 100)))
    with pytest.raises(ImageFileError, match="more than the 5000 pixel limit"):
        open_image(big, max_pixels=5000)
