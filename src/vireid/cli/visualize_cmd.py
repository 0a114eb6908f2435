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
    from vireid.utils.outputs import output_file

    output_file(args.out)
    from vireid.deploy.images import fill_modalities, list_images
    from vireid.deploy.pictures import cam_picture

    paths, modalities = list_images(args.images)
    modalities = fill_modalities(paths, modalities, args.modality)
    n = max(1, args.max_images)
    out, layer = cam_picture(args.run, paths[:n], modalities[:n], args.out, device=args.device)
    print(f"wrote {out} (Grad-CAM on '{layer}', {min(n, len(paths))} images)")
    return 0
