"""FFCV train pipeline vs the plain PyTorch loader, images/s on one generated ImageNet-like JPEG set.

Both read the same images at the same resolution, batch size and worker count; the first epoch
(numba JIT, worker start-up, page cache) is excluded; the ratio is printed last.

    python benchmarks/loader.py [--images 3000] [--resolution 160] [--batch-size 64] [--workers 2] [--epochs 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from phiscale.data import make_train_loader, write_beton
from phiscale.data.beton_file import check_beton
from phiscale.paths import cache_dir

IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]


def imagenet_like(root: Path, num_images: int, num_classes: int = 10, seed: int = 0) -> Path:
    """JPEGs of 100-500 px per side (ImageNet's range after ffcv-imagenet's 500 px cap), with
    smooth structure plus noise so they compress like photos (~15-60 KB at quality 90)."""
    done = root / f".done-{num_images}"
    if done.exists():
        return root
    rng = np.random.default_rng(seed)
    for i in range(num_images):
        w, h = (int(v) for v in rng.integers(100, 501, 2))
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        f = rng.uniform(0.5, 6.0, (3, 2)) * 2 * np.pi
        img = np.stack([127 + 80 * np.sin(f[c, 0] * x / w + f[c, 1] * y / h) for c in range(3)], -1)
        img += rng.normal(0, 12, img.shape).astype(np.float32)
        folder = root / f"class_{i % num_classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    done.touch()
    return root


def images_per_s(loader, epochs: int) -> float:
    for _ in loader:  # warm-up epoch: JIT compile, worker start, page cache
        pass
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _ in loader:
            count += len(images)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--resolution", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    root = cache_dir("bench", "imagenet_like")
    t = time.perf_counter()
    folder = imagenet_like(root / f"images_{args.images}", args.images)
    beton = root / f"train_{args.images}_500_0.50_90.beton"
    if not beton.exists():
        write_beton(folder, beton, num_workers=args.workers)
    info = check_beton(beton)
    print(f"data: {info.num_samples} images in {folder} and {beton.name} ({time.perf_counter() - t:.0f} s to prepare)")

    common = dict(batch_size=args.batch_size, num_workers=args.workers, resolution=args.resolution,
                  mean=IMAGENET_MEAN, std=IMAGENET_STD, device="cpu")
    results = {}
    for name, source in (("torch", folder), ("ffcv", beton)):
        t = time.perf_counter()
        loader = make_train_loader(source, loader=name, **common)
        results[name] = images_per_s(loader, args.epochs)
        print(f"{name:>5}: {results[name]:8.1f} images/s  ({args.epochs} epochs after a warm-up epoch, "
              f"{time.perf_counter() - t:.0f} s in all)")
    print(f"setting: resolution {args.resolution}, batch {args.batch_size}, {args.workers} workers, CPU")
    print(f"ffcv / torch = {results['ffcv'] / results['torch']:.2f}x")


if __name__ == "__main__":
    main()
