"""Reading images: colour order, conversions, resizing and errors that name the file."""

import os

import cv2
import numpy as np
import pytest

from data_generators import atomic_output, read_image, read_images
from data_generators.io import _jpeg_is_complete, check_files_exist


def write(path, image, *params):
    assert cv2.imwrite(str(path), image, list(params))
    return str(path)


@pytest.fixture
def red_square(tmp_path):
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR order
    return write(tmp_path / "red.png", bgr)


def test_read_image_returns_rgb_uint8(red_square):
    image = read_image(red_square, width=8, height=8)
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [255, 0, 0]


def test_grayscale_is_replicated_or_kept(tmp_path):
    path = write(tmp_path / "gray.png", np.full((6, 6), 77, np.uint8))
    rgb = read_image(path, width=6, height=6)
    assert rgb.shape == (6, 6, 3) and np.all(rgb == 77)
    gray = read_image(path, width=6, height=6, channels=1)
    assert gray.shape == (6, 6, 1) and np.all(gray == 77)


def test_rgb_becomes_gray_with_one_channel(red_square):
    gray = read_image(red_square, width=8, height=8, channels=1)
    assert gray.shape == (8, 8, 1)
    assert abs(int(gray[0, 0, 0]) - round(0.299 * 255)) <= 1


def test_rgba_drops_alpha(tmp_path):
    bgra = np.zeros((5, 5, 4), np.uint8)
    bgra[..., 0] = 200  # blue
    bgra[..., 3] = 10  # almost transparent: alpha is dropped, not composited
    image = read_image(write(tmp_path / "rgba.png", bgra), width=5, height=5)
    assert image.shape == (5, 5, 3)
    assert image[0, 0].tolist() == [0, 0, 200]


def test_16_bit_is_scaled_to_8_bit(tmp_path):
    deep = np.zeros((4, 4), np.uint16)
    deep[0, 0], deep[0, 1] = 65535, 257 * 100
    image = read_image(write(tmp_path / "deep.png", deep), width=4, height=4)
    assert image.dtype == np.uint8
    assert image[0, 0].tolist() == [255, 255, 255] and image[0, 1].tolist() == [100, 100, 100]


def test_mixed_sizes_are_resized(tmp_path):
    small = write(tmp_path / "small.png", np.full((4, 6, 3), 50, np.uint8))
    large = write(tmp_path / "large.jpg", np.full((40, 30, 3), 200, np.uint8))
    batch = read_images([small, large], width=10, height=12)
    assert batch.shape == (2, 12, 10, 3) and batch.dtype == np.uint8
    assert np.all(batch[0] == 50) and np.all(np.abs(batch[1].astype(int) - 200) <= 2)
    assert read_images([], width=3, height=2).shape == (0, 2, 3, 3)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="ghost.png"):
        read_image(tmp_path / "ghost.png", 4, 4)


def jpeg_bytes(size=32):
    rng = np.random.default_rng(0)
    ok, encoded = cv2.imencode(".jpg", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    assert ok
    return encoded.tobytes()


@pytest.mark.parametrize(
    "name, content",
    [
        ("corrupt.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4),
        ("truncated.jpg", jpeg_bytes()[: len(jpeg_bytes()) * 2 // 3]),
        ("notes.jpg", b"this is text, not an image\n"),
        ("empty.png", b""),
    ],
    ids=["corrupt jpeg", "truncated jpeg", "text named .jpg", "empty file"],
)
def test_undecodable_files_raise_naming_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"could not decode image file .*{name}"):
        read_image(path, 8, 8)
    with pytest.raises(ValueError, match=name):
        read_images([str(path)], 8, 8)


def test_complete_jpeg_with_trailing_bytes_is_accepted(tmp_path):
    path = tmp_path / "trailing.jpg"
    path.write_bytes(jpeg_bytes() + b"camera maker's extra data")
    assert read_image(path, 32, 32).shape == (32, 32, 3)


def test_progressive_jpeg_is_accepted(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    path = write(tmp_path / "progressive.jpg", image, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert read_image(path, 24, 24).shape == (24, 24, 3)


def test_truncation_check_sees_past_an_embedded_end_marker():
    # OpenCV's imread decodes a truncated JPEG with only a warning, so the
    # reader checks the end-of-image marker itself; a thumbnail's marker
    # inside an APP1 segment must not count.
    complete = jpeg_bytes()
    app1 = b"\xff\xe1" + (2 + 6).to_bytes(2, "big") + b"th\xff\xd9mb"
    with_thumbnail = complete[:2] + app1 + complete[2:]
    assert _jpeg_is_complete(complete) and _jpeg_is_complete(with_thumbnail)
    assert not _jpeg_is_complete(with_thumbnail[:-40])
    assert not _jpeg_is_complete(complete[:-2])


def test_bad_arguments_are_named(red_square):
    with pytest.raises(ValueError, match="channels"):
        read_image(red_square, 8, 8, channels=2)
    with pytest.raises(ValueError, match="width"):
        read_image(red_square, 0, 8)
    with pytest.raises(TypeError, match="height"):
        read_images([red_square], 8, 8.5)


def test_check_files_exist_names_the_first_missing(tmp_path, red_square):
    check_files_exist([red_square])
    missing = [str(tmp_path / "gone1.png"), str(tmp_path / "gone2.png")]
    with pytest.raises(FileNotFoundError, match=r"gone1.png.*\(2 of 3 files are missing\)"):
        check_files_exist([red_square, *missing])


def test_atomic_output_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out" / "result.txt"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as temporary:
            open(temporary, "w").write("half")
            raise RuntimeError("killed while writing")
    assert not target.exists() and os.listdir(target.parent) == []
    with atomic_output(target) as temporary:
        open(temporary, "w").write("whole")
    assert target.read_text() == "whole" and os.listdir(target.parent) == ["result.txt"]
