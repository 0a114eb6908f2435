"""`vireid export`: the run's eval-mode graph as ONNX or TorchScript, checked against PyTorch on real images."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a run to ONNX or TorchScript (with a parity check)",
                              description="Write the eval-mode (images, modality) -> features graph with a "
                                          "dynamic batch axis, run it with its own runtime on real images and "
                                          "print the max abs diff from PyTorch; fails above the tolerance.")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    p.add_argument("--out", required=True, help="output file (model.onnx, model.pt)")
    p.add_argument("--images", help="images for the parity check (folder or list file); default: the run's "
                                    "training data root, when it still exists")
    p.add_argument("--batch", type=int, default=8, help="images in the parity batch")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted abs difference (fp32)")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from vireid.deploy.export import export_run
    from vireid.deploy.images import list_images
    from vireid.utils.outputs import output_file

    output_file(args.out)
    images = list_images(args.images)[0] if args.images else None
    report = export_run(args.run, args.format, args.out, images, batch=args.batch, opset=args.opset,
                        tolerance=args.tolerance)
    print(report.line())
    return 0
