"""A tiny synthetic dataset in Cityscapes layout, for the demo sweep and the tests.

Standard library only (the ``demo-data`` command runs on a login node without the train
extra): PNGs are written by a small zlib+struct encoder. Same arguments, same bytes.
"""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

IGNORE = 255
# (Cityscapes train id, mean RGB): road, building, vegetation, sky, car. Colour tracks the class
# (plus noise), so a few dozen iterations of a tiny model get well above chance.
ROAD, BUILDING, VEGETATION, SKY, CAR = 0, 2, 8, 10, 13
COLOURS = {
    ROAD: (128, 64, 128),
    BUILDING: (70, 70, 70),
    VEGETATION: (107, 142, 35),
    SKY: (70, 130, 180),
    CAR: (0, 0, 142),
}
CITIES = {"train": "demotrain", "val": "demoval"}
NOISE = 20


def make_demo_dataset(
    root: Path,
    *,
    n_train: int = 8,
    n_val: int = 4,
    height: int = 64,
    width: int = 128,
    seed: int = 0,
) -> Path:
    """Write ``leftImg8bit/{train,val}/`` and ``gtFine/{train,val}/`` under ``root``; returns ``root``."""
    rng = random.Random(seed)
    for split, count in (("train", n_train), ("val", n_val)):
        city = CITIES[split]
        image_dir = root / "leftImg8bit" / split / city
        label_dir = root / "gtFine" / split / city
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            labels = _scene(rng, height, width)
            pixels = bytearray()
            for label in labels:
                if label == IGNORE:
                    pixels += bytes((0, 0, 0))
                    continue
                pixels += bytes(max(0, min(255, c + rng.randint(-NOISE, NOISE))) for c in COLOURS[label])
            stem = f"{city}_{index:06d}_000019"
            (image_dir / f"{stem}_leftImg8bit.png").write_bytes(encode_png(width, height, 3, bytes(pixels)))
            (label_dir / f"{stem}_gtFine_labelTrainIds.png").write_bytes(encode_png(width, height, 1, bytes(labels)))
    return root


def _scene(rng: random.Random, height: int, width: int) -> bytearray:
    """Label map, row-major: sky above a horizon, road below, buildings/trees on it, cars on the road."""
    horizon = rng.randint(height * 3 // 10, height // 2)
    labels = bytearray((SKY if y < horizon else ROAD) for y in range(height) for _x in range(width))

    def fill(x0: int, y0: int, x1: int, y1: int, label: int) -> None:
        for y in range(max(0, y0), min(height, y1)):
            labels[y * width + max(0, x0) : y * width + min(width, x1)] = bytes([label]) * (min(width, x1) - max(0, x0))

    x = 0
    while x < width:
        block = rng.randint(width // 8, width // 3)
        top = rng.randint(height // 10, horizon)
        fill(x, top, x + block, horizon + height // 8, rng.choice((BUILDING, BUILDING, VEGETATION)))
        x += block + rng.randint(0, width // 10)
    for _ in range(rng.randint(1, 3)):
        car_w, car_h = rng.randint(width // 10, width // 5), rng.randint(height // 10, height // 6)
        cx, cy = rng.randint(0, width - car_w), rng.randint(horizon + height // 8, height - car_h)
        fill(cx, cy, cx + car_w, cy + car_h, CAR)
    fill(0, height - 2, width, height, IGNORE)  # the ego-vehicle strip Cityscapes ignores
    return labels


def encode_png(width: int, height: int, channels: int, pixels: bytes) -> bytes:
    """An 8-bit greyscale (1 channel) or RGB (3 channels) PNG of row-major ``pixels``."""
    colour_type = {1: 0, 3: 2}[channels]
    stride = width * channels
    if len(pixels) != stride * height:
        raise ValueError(f"expected {stride * height} bytes of pixels, got {len(pixels)}")
    raw = b"".join(b"\x00" + pixels[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
