"""`vireid extract`: embed a folder or list of images with a trained run into a safetensors file."""

from __future__ import annotations

import sys

from vireid.utils.device import device_arg


def add_model_options(parser) -> None:
    """Options every command that runs the model shares."""
    parser.add_argument("--device", type=device_arg, default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--flip", action="store_true", default=None,
                        help="average with the mirrored image (default: the run's eval.flip)")
    parser.add_argument("--no-flip", dest="flip", action="store_false")


def register(subparsers) -> None:
    p = subparsers.add_parser("extract", help="embed your own images with a trained run",
                              description="Embed images (a folder, searched recursively, an image file, or a list "
                                          "file of 'path [modality]' lines) and write features, paths and "
                                          "modalities to a .safetensors file. Images that cannot be decoded are "
                                          "skipped and listed at the end (--strict stops at the first one).")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--images", required=True, help="folder, image file or list file")
    p.add_argument("--modality", help="visible or infrared (for every image a list line does not label)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--strict", action="store_true", help="stop at the first image that cannot be decoded")
    add_model_options(p)
    p.set_defaults(func=run_extract)


def report_failed(failed) -> None:
    if failed:
        print(f"skipped {len(failed)} image(s) that could not be decoded:", file=sys.stderr)
        for path, reason in failed:
            print(f"  {path}: {reason}", file=sys.stderr)


def run_extract(args) -> int:
    from vireid.deploy.extractor import Extractor
    from vireid.deploy.images import fill_modalities, list_images
    from vireid.deploy.store import save_features
    from vireid.utils.outputs import output_file

    output_file(args.out)
    paths, modalities = list_images(args.images)
    modalities = fill_modalities(paths, modalities, args.modality)
    extractor = Extractor(args.run, device=args.device, batch_size=args.batch_size, flip=args.flip)
    out = extractor.embed_files(paths, modalities, strict=args.strict, progress=sys.stderr.isatty())
    if not out.paths:
        report_failed(out.failed)
        raise ValueError(f"none of the {len(paths)} images from {args.images} could be decoded; nothing written")
    save_features(args.out, out.features, out.paths, out.modalities, extractor.identity().as_dict(), out.failed)
    print(f"wrote {args.out}: {len(out.paths)} features of width {out.features.shape[1]} "
          f"({extractor.method}, {extractor.checkpoint})")
    report_failed(out.failed)
    return 0
