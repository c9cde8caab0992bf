"""``gradcam-func explain-dataset``: explain_dataset from the command line.

The model and the data set are Python objects, so they are named by import path
(``package.module:function``); the function is called with no arguments. Under
torchrun (``WORLD_SIZE`` > 1) the process group is initialized here: nccl with one
GPU per ``LOCAL_RANK`` when the device is CUDA, else gloo.
"""

import importlib
import json
import os

import torch

from ._checks import GradCamError
from ._dataset import explain_dataset
from ._targets import top_k

__all__ = ["add_arguments", "run"]

COMMAND = "gradcam-func explain-dataset"


def add_arguments(parser):
    parser.add_argument(
        "--model",
        required=True,
        metavar="MODULE:FUNCTION",
        help="a function returning the nn.Module to explain",
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="MODULE:FUNCTION",
        help="a function returning the Dataset or DataLoader (items: a Tensor or (Tensor, label))",
    )
    parser.add_argument("--layer", required=True, help="dotted name of the layer, e.g. layer4")
    parser.add_argument(
        "--targets",
        nargs="+",
        required=True,
        metavar="TARGET",
        help="class indices (0 3 7), 'label' (each example's own), or "
        "'top:K' (each example's K best classes)",
    )
    parser.add_argument("--out", required=True, help="folder for the shards and the index")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="examples per grad_cam call (default: the DataLoader's, else 64)",
    )
    parser.add_argument("--shard-size", type=int, default=512, help="examples per shard file")
    parser.add_argument(
        "--upsample-to",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="resize the CAMs to H x W (bilinear)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float16", "float32"],
        default="float16",
        help="dtype of the stored CAMs",
    )
    parser.add_argument("--relu", action="store_true", help="keep positive evidence only")
    parser.add_argument(
        "--device",
        default=None,
        help="cpu or cuda (default: cuda when available; under torchrun, cuda:LOCAL_RANK)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def parse_targets(words):
    """The CLI's --targets words as explain_dataset's targets."""
    if words == ["label"]:
        return "label"
    if len(words) == 1 and words[0].startswith("top:") and words[0][4:].isdigit():
        return top_k(int(words[0][4:]))
    if all(word.lstrip("-").isdigit() for word in words):
        return [int(word) for word in words]
    raise GradCamError(
        f"{COMMAND} --targets {' '.join(words)}: expected class indices (0 3 7), 'label', "
        "or 'top:K' (for example top:5)."
    )


def load_object(spec, option):
    """Call the function that ``module:function`` names and return its result."""
    module_name, _, function = spec.partition(":")
    if not module_name or not function:
        raise GradCamError(
            f"{COMMAND} {option} {spec}: expected module:function, for "
            "example mypackage.models:resnet50."
        )
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as error:
        raise GradCamError(
            f"{COMMAND} {option} {spec}: cannot import it ({error}). Check "
            "that the module is on PYTHONPATH and defines the function."
        ) from error
    return factory()


def run(args):
    targets = parse_targets(args.targets)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if distributed:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        model = load_object(args.model, "--model").eval().to(device)
        summary = explain_dataset(
            model,
            args.layer,
            load_object(args.data, "--data"),
            targets=targets,
            out=args.out,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            upsample_to=args.upsample_to,
            dtype=getattr(torch, args.dtype),
            relu=args.relu,
            progress=not args.no_progress,
        )
    finally:
        if distributed:
            torch.distributed.destroy_process_group()
    print(json.dumps(summary))
    return 0
