"""An ImageNet-shaped ImageFolder made up on the spot, for throughput runs where no dataset can travel.

ROOT/<class>/<i>.jpg for N classes, each image a random size in [min, max] px per side: a smooth
colour field (a few random pixels blown up bicubically), a few filled shapes, mild pixel noise,
saved as JPEG quality 90. Smooth content with some noise compresses like a photograph, so the
JPEG sizes and decode times are in ImageNet's range, and the class folders are written in parallel.

    python benchmarks/synthetic_images.py ROOT --classes 1000 --per-class 13 [--min-size 300 --max-size 500]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

JPEG_QUALITY = 90


def make_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    field = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        colour = tuple(rng.integers(0, 256, 3).tolist())
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-6, 7, (height, width, 3), dtype=np.int16)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def write_class(label: int, root: Path, per_class: int, min_size: int, max_size: int, seed: int) -> int:
    rng = np.random.default_rng([seed, label])
    folder = root / f"c{label:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
        width, height = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
        make_image(rng, width, height).save(folder / f"{i:05d}.jpg", quality=JPEG_QUALITY)
    return per_class


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the ImageFolder to write (class folders c0000, c0001, ...)")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=13, help="images per class")
    parser.add_argument("--min-size", type=int, default=300, help="smallest side length in px")
    parser.add_argument("--max-size", type=int, default=500, help="largest side length in px")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for key in ("classes", "per_class", "min_size", "workers"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.max_size < args.min_size:
        parser.error(f"--max-size {args.max_size} is below --min-size {args.min_size}")
    started = time.perf_counter()
    job = partial(write_class, root=args.root, per_class=args.per_class, min_size=args.min_size,
                  max_size=args.max_size, seed=args.seed)
    with Pool(min(args.workers, args.classes)) as pool:
        total = sum(pool.imap_unordered(job, range(args.classes)))
    size_mib = sum(f.stat().st_size for f in args.root.rglob("*.jpg")) / 2**20
    print(f"synthetic_images: {total} JPEGs in {args.classes} classes, {size_mib:.0f} MiB, "
          f"{time.perf_counter() - started:.1f} s with {args.workers} processes -> {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
