"""`vireid synth-domain`: a shifted copy of a dataset (noise, lighting, colour or occlusion) in the same layout."""

from __future__ import annotations


def register(subparsers) -> None:
    from vireid.synth.domains import KINDS

    parser = subparsers.add_parser(
        "synth-domain", help="write a copy of a dataset with every image shifted to a synthetic domain",
        description="Copy a dataset root (lists and splits unchanged) with every image transformed: additive "
                    "noise, lighting (Gamma(HSV(GaussianFilter(x)))), background colour (DCT high-pass + new "
                    "mean colour) or a random occluding rectangle. Deterministic per seed and image path.")
    parser.add_argument("--in", dest="in_root", required=True, help="dataset root to copy")
    parser.add_argument("--out", required=True, help="output root (must be new or empty)")
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    from vireid.synth.domains import synth_domain

    summary = synth_domain(args.in_root, args.out, args.kind, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote {summary['images']} {summary['kind']}-shifted images and copied {summary['files']} other "
          f"files to {summary['root']}")
    return 0
