"""Explain a whole data set into resumable shards, on one process or many (torchrun).

Layout of ``out``:
    run.json                       the run's arguments (checked on every restart)
    r{rank}-{shard:05d}.npy        CAMs (n, K, 1, *S) of one shard, in ``dtype``
    r{rank}-{shard:05d}.classes.npy  the explained classes (n, K), for "label" / top_k
    index-r{rank}.json             the shards of one rank that are complete
    index.json                     all ranks' shards, merged by rank 0 at the end

Every file is written under a temporary name and renamed into place, and a shard is
listed in its rank's index only once its files exist, so a run killed at any point
and started again with the same arguments redoes at most the shard it was writing.
"""

import hashlib
import json
import os
import time

import numpy as np
import torch

from ._checks import GradCamError
from ._grad_cam import grad_cam
from ._interpolate import interpolate
from ._targets import TopK

__all__ = ["explain_dataset", "load_cams"]


def _write_atomic(path, write):
    tmp = f"{path}.tmp-{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


def _save_json(path, value):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(value, f, indent=1)
    _write_atomic(path, write)


def _save_npy(path, array):
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, array)
    _write_atomic(path, write)


def _load_json(path):
    with open(path) as f:
        return json.load(f)


def _fingerprint(model):
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _targets_spec(targets):
    if isinstance(targets, TopK):
        return f"top_k({targets.k})"
    if targets == "label":
        return "label"
    if isinstance(targets, (list, tuple)) and targets and all(
            isinstance(t, int) and not isinstance(t, bool) for t in targets):
        return list(targets)
    raise GradCamError(
        f"explain_dataset(..., targets={targets!r}): expected a list of class indices, "
        "the string 'label' (each example's own label), or top_k(k)."
    )


def _rank_and_world():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _split_item(item):
    """(input, label or None) from a data set item: a Tensor or (Tensor, label, ...)."""
    if isinstance(item, torch.Tensor):
        return item, None
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        return item[0], (int(item[1]) if len(item) > 1 else None)
    raise GradCamError(
        "explain_dataset(data=...): each item must be a Tensor or a tuple (Tensor, label, "
        f"...); got {type(item).__name__}."
    )


def _check_args(out, run, rank):
    path = os.path.join(out, "run.json")
    if os.path.exists(path):
        recorded = _load_json(path)
        differ = sorted(k for k in set(run) | set(recorded) if run.get(k) != recorded.get(k))
        if differ:
            detail = "; ".join(f"{k}: recorded {recorded.get(k)!r}, now {run.get(k)!r}"
                               for k in differ)
            raise GradCamError(
                f"explain_dataset(..., out={str(out)!r}): the folder holds a run with other "
                f"arguments ({detail}). Use a new folder, or the same arguments to resume."
            )
    elif rank == 0:
        _save_json(path, run)


def explain_dataset(model, layer, data, *, targets, out, batch_size=None, shard_size=512,
                    upsample_to=None, dtype=torch.float16, relu=False, progress=True):
    """Explain every example of ``data`` for ``targets`` into shards under ``out``.

    data: a ``torch.utils.data.Dataset`` (or a DataLoader, whose data set and batch
    size are used) of Tensors or (Tensor, label) pairs; batch_size defaults to the
    loader's, else 64. Batches go to the device of the model's parameters. targets: a list of K classes, "label", or
    ``top_k(k)``. Each batch is one ``grad_cam(..., targets=...)`` call (one forward).
    upsample_to: a size to resize CAMs to (bilinear). Under ``torch.distributed``
    (torchrun), rank r explains examples r, r + W, r + 2W, ... and rank 0 merges the
    index. Returns a summary dict (examples, shards written, shards resumed, seconds).
    """
    from tqdm.auto import tqdm

    dataset = getattr(data, "dataset", data)
    batch_size = batch_size or getattr(data, "batch_size", None) or 64
    parameter = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    device = parameter.device if parameter is not None else torch.device("cpu")
    rank, world = _rank_and_world()
    spec = _targets_spec(targets)
    run = {
        "model": _fingerprint(model) if isinstance(model, torch.nn.Module) else repr(model),
        "layer": layer if isinstance(layer, str) else type(layer).__name__,
        "targets": spec, "examples": len(dataset), "shard_size": shard_size,
        "upsample_to": list(upsample_to) if upsample_to else None,
        "dtype": str(dtype), "relu": relu, "world_size": world,
    }
    os.makedirs(out, exist_ok=True)
    _check_args(out, run, rank)
    if world > 1:
        torch.distributed.barrier()
    index_path = os.path.join(out, f"index-r{rank}.json")
    done = _load_json(index_path)["shards"] if os.path.exists(index_path) else []
    mine = list(range(rank, len(dataset), world))
    shards = [mine[i:i + shard_size] for i in range(0, len(mine), shard_size)]
    start, written = time.perf_counter(), 0
    bar = tqdm(total=len(mine), unit="ex", desc=f"explaining (rank {rank})",
               disable=not progress or rank != 0)
    bar.update(sum(len(s["indices"]) for s in done))
    for number in range(len(done), len(shards)):
        cams, classes = [], []
        for first in range(0, len(shards[number]), batch_size):
            indices = shards[number][first:first + batch_size]
            items = [_split_item(dataset[i]) for i in indices]
            x = torch.stack([inp for inp, _ in items]).to(device)
            if spec == "label":
                if any(label is None for _, label in items):
                    raise GradCamError("explain_dataset(..., targets='label'): the data set's "
                                       "items carry no label; give (Tensor, label) pairs.")
                chosen = torch.tensor([[label for _, label in items]])
                result = grad_cam(model, layer, x, targets=[chosen[0]], relu=relu)
            elif isinstance(targets, TopK):
                result, chosen = grad_cam(model, layer, x, targets=targets, relu=relu)
            else:
                chosen = None
                result = grad_cam(model, layer, x, targets=list(targets), relu=relu)
            result = result.transpose(0, 1)                              # (n, K, 1, *S)
            if upsample_to:
                flat = interpolate(result.flatten(0, 1), tuple(upsample_to), "bilinear")
                result = flat.reshape(result.shape[:3] + flat.shape[2:])
            cams.append(result.to(dtype).cpu().numpy())
            if chosen is not None:
                classes.append(chosen.T.cpu().numpy())
            bar.update(len(indices))
        name = f"r{rank}-{number:05d}"
        _save_npy(os.path.join(out, f"{name}.npy"), np.concatenate(cams))
        entry = {"file": f"{name}.npy", "indices": shards[number]}
        if classes:
            _save_npy(os.path.join(out, f"{name}.classes.npy"), np.concatenate(classes))
            entry["classes"] = f"{name}.classes.npy"
        done.append(entry)
        _save_json(index_path, {"rank": rank, "shards": done})
        written += 1
    bar.close()
    if world > 1:
        torch.distributed.barrier()
    if rank == 0:
        merged = [s for r in range(world)
                  for s in _load_json(os.path.join(out, f"index-r{r}.json"))["shards"]]
        _save_json(os.path.join(out, "index.json"), {"run": run, "shards": merged})
    return {"examples": len(mine), "shards_written": written,
            "shards_resumed": len(shards) - written,
            "seconds": time.perf_counter() - start}


def load_cams(out, indices=None, *, with_classes=False):
    """CAMs (N, K, 1, *S) as float32 for example ``indices`` (all, in order, if None).

    with_classes: also return the explained classes (N, K) (runs with "label" or top_k).
    """
    path = os.path.join(out, "index.json")
    if not os.path.exists(path):
        raise GradCamError(f"load_cams({out!r}): no index.json there; the run has not "
                           "finished (start it again with the same arguments to resume).")
    index = _load_json(path)
    where = {i: (s, offset) for s in index["shards"] for offset, i in enumerate(s["indices"])}
    if indices is None:
        indices = sorted(where)
    missing = [i for i in indices if i not in where]
    if missing:
        raise GradCamError(f"load_cams({out!r}, indices=...): examples {missing[:5]} are not "
                           f"in the run ({len(where)} examples explained).")
    cache, cams, classes = {}, [], []
    for i in indices:
        shard, offset = where[i]
        if shard["file"] not in cache:
            cache[shard["file"]] = np.load(os.path.join(out, shard["file"]), mmap_mode="r")
            if "classes" in shard:
                cache[shard["classes"]] = np.load(os.path.join(out, shard["classes"]))
        cams.append(np.asarray(cache[shard["file"]][offset], dtype=np.float32))
        if with_classes:
            if "classes" not in shard:
                raise GradCamError(f"load_cams({out!r}, with_classes=True): this run explained "
                                   "fixed classes; there are no per-example classes stored.")
            classes.append(cache[shard["classes"]][offset])
    result = torch.from_numpy(np.stack(cams))
    return (result, torch.from_numpy(np.stack(classes))) if with_classes else result


def add_arguments(parser):
    parser.add_argument("--model", required=True,
                        help="module:function returning the nn.Module to explain")
    parser.add_argument("--data", required=True,
                        help="module:function returning the Dataset (items Tensor or (Tensor, label))")
    parser.add_argument("--layer", required=True, help="dotted name of the layer")
    parser.add_argument("--targets", nargs="+", required=True,
                        help="class indices, 'label', or 'top:K'")
    parser.add_argument("--out", required=True, help="folder for shards and index")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per grad_cam call")
    parser.add_argument("--shard-size", type=int, default=512)
    parser.add_argument("--upsample-to", type=int, nargs="+", default=None)
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--relu", action="store_true")
    parser.add_argument("--no-progress", action="store_true")


def _load_factory(spec):
    import importlib

    module_name, _, function = spec.partition(":")
    if not function:
        raise GradCamError(f"explain-dataset: expected module:function, got {spec!r}.")
    return getattr(importlib.import_module(module_name), function)()


def run(args):
    from ._targets import top_k

    if args.targets[0].startswith("top:"):
        targets = top_k(int(args.targets[0][4:]))
    elif args.targets == ["label"]:
        targets = "label"
    else:
        targets = [int(t) for t in args.targets]
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        summary = explain_dataset(
            _load_factory(args.model).eval(), args.layer, _load_factory(args.data),
            targets=targets, out=args.out, batch_size=args.batch_size,
            shard_size=args.shard_size, upsample_to=args.upsample_to,
            dtype=getattr(torch, args.dtype), relu=args.relu, progress=not args.no_progress)
    finally:
        if distributed:
            torch.distributed.destroy_process_group()
    print(json.dumps(summary))
    return 0
