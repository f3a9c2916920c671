"""Write a synthetic packed-shelf dataset in the SKU-110K layout (``sku110k-synth``).

The images are rendered shelves of densely packed, look-alike, touching products (see
keras_retinanet/utils/synthetic.py); they stand in for SKU-110K in the demo, the tests and CPU-only
runs. Output, as the real dataset:

    OUT/images/{train,val,test}_N.jpg
    OUT/annotations/annotations_{train,val,test}.csv   (no header: img,x1,y1,x2,y2,object,W,H)
    OUT/class_mappings.csv                              (object,0)

Example (320x320 images with 28-64 px products, about 35 per image):

    PYTHONPATH=. python object_detector_retinanet/keras_retinanet/bin/synth.py \\
        --out ./synthetic_sku110k --train 100 --val 10 --test 20 --seed 0

The same seed gives byte-identical CSVs and identical images; each split has its own sub-seed, so
changing --train does not change the val or test images.
"""

from __future__ import annotations

import argparse
import os
import sys

from tqdm import tqdm

if __name__ == "__main__" and not __package__:  # run as a file: make the package importable
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[".."] * 3)))

from object_detector_retinanet.keras_retinanet.errors import InputError, reports_input_errors
from object_detector_retinanet.keras_retinanet.utils import synthetic
from object_detector_retinanet.utils import resolve_path

DEFAULT_OUT = "./synthetic_sku110k"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``sys.argv[1:]`` when ``argv`` is None)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help="Dataset root to write (default: %(default)s)."
    )
    for split, count in synthetic.DEFAULT_COUNTS.items():
        parser.add_argument(
            f"--{split}",
            type=int,
            default=count,
            help=f"Number of {split} images (default: %(default)s).",
        )
    scaled = "in pixels (default: %s at 320x320, scaled with size)."
    for flag, kind, default, text in (
        (
            "--height",
            int,
            synthetic.DEFAULT_HEIGHT,
            "Image height in pixels (default: %(default)s).",
        ),
        ("--width", int, synthetic.DEFAULT_WIDTH, "Image width in pixels (default: %(default)s)."),
        ("--seed", int, 0, "Random seed, >= 0 (default: %(default)s)."),
        ("--min-size", float, None, "Smallest product sqrt(w*h) " + scaled % 28),
        ("--max-size", float, None, "Largest product sqrt(w*h) " + scaled % 64),
        (
            "--jpeg-quality",
            int,
            synthetic.DEFAULT_JPEG_QUALITY,
            "JPEG quality 1-100 (default: %(default)s).",
        ),
    ):
        parser.add_argument(flag, type=kind, default=default, help=text)
    args = parser.parse_args(argv)
    for name in ("train", "val", "test"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0")
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    if args.height < 16 or args.width < 16:
        parser.error("--height and --width must be >= 16")
    if not 1 <= args.jpeg_quality <= 100:
        parser.error("--jpeg-quality must be in 1..100")
    return args


@reports_input_errors
def main(argv: list[str] | None = None) -> dict:
    """Write the dataset; returns :func:`synthetic.write_dataset`'s summary."""
    args = parse_args(argv)
    counts = {"train": args.train, "val": args.val, "test": args.test}
    with tqdm(total=sum(counts.values()), desc="Rendering", unit="img") as bar:
        try:
            summary = synthetic.write_dataset(
                resolve_path(args.out),
                counts=counts,
                height=args.height,
                width=args.width,
                seed=args.seed,
                min_object_size=args.min_size,
                max_object_size=args.max_size,
                jpeg_quality=args.jpeg_quality,
                on_image=lambda split, index, n_boxes: bar.update(1),
            )
        except ValueError as error:  # an image size or size range the generator cannot use
            raise InputError(str(error)) from None
    print(f"Wrote synthetic SKU-110K dataset to {summary['out_dir']}")
    for split, info in summary["splits"].items():
        mean = info["boxes"] / info["images"] if info["images"] else 0.0
        print(
            f"  {split}: {info['images']} images, {info['boxes']} boxes ({mean:.1f} per image) "
            f"-> {info['annotations']}"
        )
    print(f"  classes: {summary['class_mappings']}")
    return summary


if __name__ == "__main__":
    main()
