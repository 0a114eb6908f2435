"""`vireid synth`: write a synthetic VI-ReID dataset in a real dataset's layout."""

from __future__ import annotations

import argparse


def parse_size(text: str) -> tuple[int, int]:
    """'128x64' -> (128, 64): height x width, like the reference's 288x144."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not HEIGHTxWIDTH, e.g. 128x64") from None
    return height, width


def register(subparsers) -> None:
    from vireid.synth.generator import DEFAULT_SIZE, LAYOUTS

    parser = subparsers.add_parser(
        "synth", help="write a synthetic dataset in the SYSU-MM01, RegDB, LLCM, Market-1501, DukeMTMC-reID or "
                 "MSMT17 layout",
        description="Write a synthetic pedestrian dataset (visible/infrared, or visible only for market1501, "
                    "dukemtmc, msmt17) in exactly the layout of a real one (folders, file names, list files), "
                    "deterministic per seed.")
    parser.add_argument("--out", required=True, help="output folder (must be new or empty)")
    parser.add_argument("--layout", required=True, choices=LAYOUTS)
    parser.add_argument("--ids", type=int, required=True, help="number of identities (>= 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=parse_size, default=DEFAULT_SIZE, help="HEIGHTxWIDTH (default 128x64)")
    parser.add_argument("--images", type=int, default=None,
                        help="images per (identity, camera), at most (default: sysu/regdb 10, others 6)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    import time

    from vireid.synth.generator import generate
    from vireid.utils.outputs import output_dir

    output_dir(args.out)
    start = time.perf_counter()
    summary = generate(args.out, args.layout, args.ids, seed=args.seed, size=args.size, images=args.images,
                       workers=args.workers, overwrite=args.overwrite, progress=True)
    seconds = time.perf_counter() - start
    print(f"wrote {summary['images']} images ({summary['visible']} visible, {summary['infrared']} infrared) "
          f"of {summary['ids']} identities in the {summary['layout']} layout to {summary['root']} "
          f"in {seconds:.1f} s ({summary['images'] / max(seconds, 1e-9):.0f} images/s)")
    if args.layout == "sysu" and not summary["rand_perm_cam"]:
        print("note: exp/rand_perm_cam.mat not written (needs scipy: pip install 'vireid[mat]')")
    return 0
