"""`phiscale-write-beton SRC_DIR OUT.beton`: convert an ImageFolder to an FFCV `.beton`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from phiscale.errors import user_errors_as_one_line


def build_parser() -> argparse.ArgumentParser:
    from phiscale.data.beton_writer import (
        COMPRESS_PROBABILITY,
        JPEG_QUALITY,
        MAX_RESOLUTION,
        default_num_workers,
    )

    parser = argparse.ArgumentParser(
        prog="phiscale-write-beton",
        description="Convert an ImageFolder (SRC_DIR/<class>/<image>, JPEG/PNG/...) into an FFCV .beton, "
        "with ffcv-imagenet's storage defaults. Labels are the sorted class folder names; the map is "
        "saved beside the output as OUT.classes.json. The file is written under a temporary name and "
        "renamed when complete.",
        epilog="example (ffcv-imagenet's naming): phiscale-write-beton /datasets/imagenet/train "
        "/datasets/imagenet/train_500_0.50_90.beton",
    )
    parser.add_argument("src_dir", metavar="SRC_DIR", help="ImageFolder root: one subfolder of images per class")
    parser.add_argument("out", metavar="OUT.beton", help="the .beton file to write")
    parser.add_argument("--max-resolution", type=int, default=MAX_RESOLUTION, metavar="PX",
                        help="downscale so the longer side is at most PX pixels (default: %(default)s)")
    parser.add_argument("--jpeg-quality", type=int, default=JPEG_QUALITY, metavar="Q",
                        help="JPEG quality 1-100 of the images stored compressed (default: %(default)s)")
    parser.add_argument("--compress-probability", type=float, default=COMPRESS_PROBABILITY, metavar="P",
                        help="fraction of images stored as JPEG, the rest as raw pixels (raw decodes faster, "
                        "JPEG is smaller on disk) (default: %(default)s)")
    parser.add_argument("--num-workers", type=int, default=default_num_workers(), metavar="N",
                        help="writer processes (default: the CPU cores available, %(default)s here)")
    parser.add_argument("--force", action="store_true", help="overwrite OUT.beton if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@user_errors_as_one_line
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from phiscale.data.beton_file import check_beton, class_map_path
    from phiscale.data.beton_writer import write_beton

    out = write_beton(
        args.src_dir, args.out, max_resolution=args.max_resolution, jpeg_quality=args.jpeg_quality,
        compress_probability=args.compress_probability, num_workers=args.num_workers, force=args.force,
        progress=not args.no_progress,
    )
    info = check_beton(out)
    size_mb = out.stat().st_size / 2**20
    print(f"wrote {out} ({info.num_samples} images, {info.num_classes_seen} classes, {size_mb:.1f} MiB); "
          f"classes in {class_map_path(out)}")


if __name__ == "__main__":
    main()
