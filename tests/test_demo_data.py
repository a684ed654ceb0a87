"""The synthetic Cityscapes-format dataset: deterministic, in mmseg's layout, valid PNGs (no numpy)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from prove_jobs.demo_data import encode_png, make_demo_dataset


def read_png(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, channels, row-major pixels) of an 8-bit, non-interlaced, filter-0 PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0)
    channels = {0: 1, 2: 3}[colour]
    raw = zlib.decompress(idat)
    stride = width * channels
    rows = [raw[y * (stride + 1) : (y + 1) * (stride + 1)] for y in range(height)]
    assert all(row[0] == 0 for row in rows)  # filter type None
    return width, height, channels, b"".join(row[1:] for row in rows)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_matches_cityscapes(tmp_path: Path) -> None:
    root = make_demo_dataset(tmp_path / "cityscapes", n_train=3, n_val=2)
    assert root == tmp_path / "cityscapes"
    files = tree(root)
    images = [f for f in files if f.startswith("leftImg8bit/")]
    labels = [f for f in files if f.startswith("gtFine/")]
    assert len(images) == 5 and len(labels) == 5
    for image in images:
        split, city, name = image.split("/")[1:]
        assert split in ("train", "val") and name.startswith(city + "_")
        assert name.endswith("_leftImg8bit.png")
        label = f"gtFine/{split}/{city}/" + name.replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png")
        assert label in files


def test_pixels_and_labels(tmp_path: Path) -> None:
    root = make_demo_dataset(tmp_path, n_train=2, n_val=1, height=32, width=48)
    seen: set[int] = set()
    for path in root.rglob("*.png"):
        width, height, channels, pixels = read_png(path.read_bytes())
        assert (width, height) == (48, 32)
        if path.name.endswith("_labelTrainIds.png"):
            assert channels == 1
            seen |= set(pixels)
        else:
            assert channels == 3 and len(pixels) == 48 * 32 * 3
    assert seen <= set(range(19)) | {255}
    assert 255 in seen and len(seen - {255}) >= 3  # several classes plus the ignore strip


def test_deterministic_and_idempotent(tmp_path: Path) -> None:
    first = tree(make_demo_dataset(tmp_path / "a"))
    again = tree(make_demo_dataset(tmp_path / "a"))  # over an existing dir
    other = tree(make_demo_dataset(tmp_path / "b"))
    assert first == again == other
    assert tree(make_demo_dataset(tmp_path / "c", seed=1)) != first


def test_encode_png_round_trips() -> None:
    pixels = bytes(range(256)) * 3
    assert read_png(encode_png(16, 16, 3, pixels)) == (16, 16, 3, pixels)
