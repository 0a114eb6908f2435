"""`vireid visualize tsne|cam`: pictures of what a trained run learned."""

from __future__ import annotations

from vireid.utils.device import device_arg


def register(subparsers) -> None:
    p = subparsers.add_parser("visualize", help="pictures of a trained run: t-SNE of test features, Grad-CAM",
                              description="t-SNE: test features of a protocol's trial 0 in 2-D (colour = "
                                          "identity, marker = modality; needs pip install 'vireid[viz]'). "
                                          "cam: Grad-CAM on the model's last feature map over your images.")
    sub = p.add_subparsers(dest="picture", metavar="PICTURE", required=True)
    t = sub.add_parser("tsne", help="t-SNE of test features")
    t.add_argument("run", help="run directory or checkpoint file")
    t.add_argument("--data-root", required=True)
    t.add_argument("--protocol", help="default: the run config's eval.protocol")
    t.add_argument("--ids", type=int, default=12, help="identities shown (the first ones of the test split)")
    t.add_argument("--out", required=True, help="output PNG")
    t.add_argument("--device", type=device_arg, default="cpu")
    t.set_defaults(func=run_tsne)
    c = sub.add_parser("cam", help="Grad-CAM overlays (last feature map, any method)")
    c.add_argument("run", help="run directory or checkpoint file")
    c.add_argument("--images", required=True, help="folder, image file or list file ('path [modality]' lines)")
    c.add_argument("--modality", help="visible or infrared (for every image a list line does not label)")
    c.add_argument("--max-images", type=int, default=8)
    c.add_argument("--out", required=True, help="output PNG")
    c.add_argument("--device", type=device_arg, default="cpu")
    c.set_defaults(func=run_cam)


def run_tsne(args) -> int:
    from vireid.utils.outputs import output_file

    output_file(args.out)
    from vireid.deploy.pictures import tsne_picture

    print(f"wrote {tsne_picture(args.run, args.data_root, args.out, args.protocol, args.ids, device=args.device)}")
    return 0


def run_cam(args) -> int:
    from vireid.cli.extract_cmd import report_failed
    from vireid.data.image_file import probe
    from vireid.deploy.images import fill_modalities, list_images
    from vireid.deploy.pictures import cam_picture
    from vireid.utils.outputs import output_file

    output_file(args.out)
    paths, modalities = list_images(args.images)
    modalities = fill_modalities(paths, modalities, args.modality)
    n = max(1, args.max_images)
    kept, failed = [], []
    for path, modality in zip(paths, modalities):  # the image policy: bad files are skipped and listed
        if len(kept) == n:
            break
        problem = probe(path)[0]
        if problem:
            failed.append((path, problem))
        else:
            kept.append((path, modality))
    if not kept:
        report_failed(failed)
        raise ValueError(f"none of the images from {args.images} could be decoded; no picture written")
    out, layer = cam_picture(args.run, [p for p, _ in kept], [m for _, m in kept], args.out, device=args.device)
    print(f"wrote {out} (Grad-CAM on '{layer}', {len(kept)} images)")
    report_failed(failed)
    return 0
