"""Explain a whole data set into resumable shards, on one process or many (torchrun).

Layout of ``out``:
    run.json                       the run's arguments (checked on every restart)
    r{rank}-{shard:05d}.npy        CAMs (n, K, 1, *S) of one shard, in ``dtype``
    r{rank}-{shard:05d}.classes.npy  the explained classes (n, K), for "label" / top_k
    index-r{rank}.json             the shards of one rank that are complete
    index.json                     all ranks' shards, merged by rank 0 at the end

Every file is written under a temporary name, flushed to disk and renamed into place,
and a shard is listed in its rank's index only once its files exist, so a run killed
at any point and started again with the same arguments redoes at most the shard it
was writing.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ._checks import GradCamError, check_flags, resolve_layer
from ._grad_cam import grad_cam
from ._interpolate import interpolate
from ._targets import TopK
from ._types import Layer

__all__ = ["explain_dataset", "load_cams"]

CALL = "explain_dataset"


def _write_atomic(path, write):
    """Write ``path`` through ``write(file)`` on a temporary name, then rename it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_json(path, value):
    _write_atomic(path, lambda f: f.write(json.dumps(value, indent=1).encode()))


def _save_npy(path, array):
    _write_atomic(path, lambda f: np.save(f, array))


def _load_json(path):
    with open(path) as f:
        return json.load(f)


def _fingerprint(module):
    """A short hash of a module's parameters and buffers (names, dtypes, values)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _model_and_layer_spec(model, layer):
    """What identifies the model and the layer across processes: hashes and names."""
    module = resolve_layer(model, layer, CALL)
    if isinstance(model, torch.nn.Module):
        names = {id(m): name for name, m in model.named_modules()}
        return _fingerprint(model), names[id(module)]
    # a plain function: its name, and the layer's weights it runs through
    name = getattr(model, "__qualname__", type(model).__name__)
    name = f"{getattr(model, '__module__', None)}.{name}"
    return name, f"{type(module).__name__}:{_fingerprint(module)}"


def _targets_spec(targets):
    if isinstance(targets, TopK):
        return repr(targets)
    if isinstance(targets, str) and targets == "label":
        return "label"
    if (
        isinstance(targets, (list, tuple))
        and targets
        and all(isinstance(t, int) and not isinstance(t, bool) for t in targets)
    ):
        return list(targets)
    raise GradCamError(
        f"{CALL}(..., targets={targets!r}): expected a non-empty list of class indices, "
        "the string 'label' (each example's own label), or top_k(k)."
    )


def _check_data(dataset):
    if isinstance(dataset, torch.utils.data.IterableDataset) or not (
        hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")
    ):
        raise GradCamError(
            f"{CALL}(..., data={type(dataset).__name__}): expected a map-style Dataset "
            "(with __len__ and __getitem__) or a DataLoader over one, since resuming and "
            "splitting across processes address examples by index. Wrap the examples in "
            "a Dataset that indexes them."
        )


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GradCamError(f"{CALL}(..., {name}={value!r}): expected a positive int.")


def _rank_and_world():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _check_run(out, run, rank):
    """Refuse a folder recorded with other arguments; record them on a fresh folder."""
    path = os.path.join(out, "run.json")
    if os.path.exists(path):
        recorded = _load_json(path)
        differ = sorted(k for k in set(run) | set(recorded) if run.get(k) != recorded.get(k))
        if differ:
            detail = "; ".join(
                f"{k}: recorded {recorded.get(k)!r}, now {run.get(k)!r}" for k in differ
            )
            raise GradCamError(
                f"{CALL}(..., out={str(out)!r}): the folder holds a run with other "
                f"arguments ({detail}). Use a new folder, or the same arguments to resume."
            )
    elif rank == 0:
        _save_json(path, run)


def _inputs_and_labels(batch, need_labels):
    """(inputs (B, ...), labels (B,) or None) from a collated batch."""
    if isinstance(batch, torch.Tensor):
        inputs, labels = batch, None
    elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        inputs, labels = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        raise GradCamError(
            f"{CALL}(..., data=...): each example must be a Tensor or a tuple (Tensor, "
            f"label, ...); a batch of them collated to {type(batch).__name__}."
        )
    if not need_labels:
        return inputs, None
    if not (
        isinstance(labels, torch.Tensor)
        and labels.shape == inputs.shape[:1]
        and not labels.is_floating_point()
    ):
        raise GradCamError(
            f"{CALL}(..., targets='label'): each example must be a pair (Tensor, int "
            f"label); the batch's labels are {labels!r:.80}. Give (Tensor, label) items "
            "or pass a list of classes."
        )
    return inputs, labels


def _explain_batch(model, layer, inputs, labels, targets, relu, upsample_to):
    """CAMs (B, K, 1, *S) of one batch, and the classes explained (B, K) or None."""
    if isinstance(targets, TopK):
        cams, classes = grad_cam(model, layer, inputs, targets=targets, relu=relu)
    else:
        classes = None if labels is None else labels[None]
        cams = grad_cam(
            model, layer, inputs, relu=relu, targets=list(targets) if labels is None else [labels]
        )
    cams = cams.transpose(0, 1)
    if upsample_to:
        flat = interpolate(cams.flatten(0, 1), tuple(upsample_to), "bilinear")
        cams = flat.reshape(cams.shape[:3] + flat.shape[2:])
    return cams, (None if classes is None else classes.T)


def explain_dataset(
    model: nn.Module,
    layer: Layer,
    data: torch.utils.data.Dataset[Any] | torch.utils.data.DataLoader[Any],
    *,
    targets: Any,
    out: str | os.PathLike[str],
    batch_size: int | None = None,
    shard_size: int = 512,
    upsample_to: int | Sequence[int] | None = None,
    dtype: torch.dtype = torch.float16,
    relu: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Explain every example of ``data`` for ``targets`` into shards under ``out``.

    data: a map-style ``Dataset`` of Tensors or (Tensor, label) pairs, or a DataLoader
    over one (its batch size, workers and collate function are used; its sampler is
    not: examples go in index order). batch_size defaults to the loader's, else 64.
    Batches go to the device of the model's parameters. targets: a list of K classes,
    "label", or ``top_k(k)``; each batch is one ``grad_cam(..., targets=...)`` call
    (one forward). upsample_to: a size (H, W) to resize the CAMs to (bilinear).
    Under ``torch.distributed`` (torchrun), rank r of W explains examples r, r + W, ...
    and rank 0 merges the index. Returns this process's summary: examples explained now
    and resumed, shards written and resumed, seconds.
    """
    from tqdm.auto import tqdm

    check_flags("explain_dataset", relu=relu, progress=progress)
    dataset: Any = getattr(data, "dataset", data)
    _check_data(dataset)
    spec = _targets_spec(targets)
    if batch_size is None:
        batch_size = getattr(data, "batch_size", None) or 64
    _check_positive("batch_size", batch_size)
    _check_positive("shard_size", shard_size)
    if isinstance(upsample_to, int):
        upsample_to = (upsample_to, upsample_to)
    model_spec, layer_name = _model_and_layer_spec(model, layer)
    parameter = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    device = parameter.device if parameter is not None else torch.device("cpu")
    rank, world = _rank_and_world()
    run = {
        "model": model_spec,
        "layer": layer_name,
        "targets": spec,
        "examples": len(dataset),
        "shard_size": shard_size,
        "upsample_to": list(upsample_to) if upsample_to else None,
        "dtype": str(dtype),
        "relu": relu,
        "world_size": world,
    }
    os.makedirs(out, exist_ok=True)
    _check_run(out, run, rank)
    if world > 1:
        torch.distributed.barrier()
    own = [f"r{rank}-*", f"index-r{rank}.json"] + ["run.json", "index.json"] * (rank == 0)
    for pattern in own:  # temporary files left by a killed run of this rank
        for stale in glob.glob(os.path.join(glob.escape(str(out)), f"{pattern}.tmp-*")):
            os.remove(stale)

    index_path = os.path.join(out, f"index-r{rank}.json")
    if not os.path.exists(index_path):  # even a rank with no examples has an index
        _save_json(index_path, {"rank": rank, "shards": []})
    done = _load_json(index_path)["shards"]
    mine = list(range(rank, len(dataset), world))
    shards = [mine[i : i + shard_size] for i in range(0, len(mine), shard_size)]
    plan = [
        (number, shards[number][i : i + batch_size])
        for number in range(len(done), len(shards))
        for i in range(0, len(shards[number]), batch_size)
    ]
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=[indices for _, indices in plan],
        num_workers=getattr(data, "num_workers", 0),
        collate_fn=getattr(data, "collate_fn", None),
        pin_memory=getattr(data, "pin_memory", False),
        multiprocessing_context=getattr(data, "multiprocessing_context", None),
        worker_init_fn=getattr(data, "worker_init_fn", None),
    )

    start = time.perf_counter()
    resumed = sum(len(s["indices"]) for s in done)
    bar = tqdm(
        total=len(mine),
        initial=resumed,
        unit="ex",
        disable=not progress or rank != 0,
        desc=f"explaining (rank 0 of {world})" if world > 1 else "explaining",
    )
    cams, classes = [], []
    for (number, indices), batch in zip(plan, loader, strict=True):
        inputs, labels = _inputs_and_labels(batch, need_labels=spec == "label")
        batch_cams, batch_classes = _explain_batch(
            model, layer, inputs.to(device), labels, targets, relu, upsample_to
        )
        cams.append(batch_cams.to(dtype).cpu().numpy())
        if batch_classes is not None:
            classes.append(batch_classes.cpu().numpy())
        bar.update(len(indices))
        if indices[-1] != shards[number][-1]:
            continue  # the shard's last batch not yet reached
        name = f"r{rank}-{number:05d}"
        _save_npy(os.path.join(out, f"{name}.npy"), np.concatenate(cams))
        entry = {"file": f"{name}.npy", "indices": shards[number]}
        if classes:
            _save_npy(os.path.join(out, f"{name}.classes.npy"), np.concatenate(classes))
            entry["classes"] = f"{name}.classes.npy"
        done.append(entry)
        _save_json(index_path, {"rank": rank, "shards": done})
        cams, classes = [], []
    bar.close()

    if world > 1:
        torch.distributed.barrier()
    if rank == 0:
        merged = [
            s
            for r in range(world)
            for s in _load_json(os.path.join(out, f"index-r{r}.json"))["shards"]
        ]
        _save_json(os.path.join(out, "index.json"), {"run": run, "shards": merged})
    written = len({number for number, _ in plan})
    return {
        "examples": len(mine) - resumed,
        "examples_resumed": resumed,
        "shards_written": written,
        "shards_resumed": len(shards) - written,
        "seconds": time.perf_counter() - start,
    }


def load_cams(
    out: str | os.PathLike[str],
    indices: Sequence[int] | torch.Tensor | None = None,
    *,
    with_classes: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """CAMs (N, K, 1, *S) as float32 for example ``indices`` (all, in order, if None).

    with_classes: also return the explained classes (N, K) (runs with "label" or top_k).
    The shards are memory-mapped, so only the examples asked for are read from disk.
    """
    check_flags("load_cams", with_classes=with_classes)
    path = os.path.join(out, "index.json")
    if not os.path.exists(path):
        raise GradCamError(
            f"load_cams({str(out)!r}): no index.json there; the run has not "
            "finished (start it again with the same arguments to resume)."
        )
    index = _load_json(path)
    where = {i: (s, offset) for s in index["shards"] for offset, i in enumerate(s["indices"])}
    if indices is None:
        indices = sorted(where)
    indices = [int(i) for i in indices]
    missing = [i for i in indices if i not in where]
    if missing:
        raise GradCamError(
            f"load_cams({str(out)!r}, indices=...): examples {missing[:5]} are "
            f"not in the run, which explained examples 0..{len(where) - 1}."
        )
    if with_classes and isinstance(index["run"]["targets"], list):
        raise GradCamError(
            f"load_cams({str(out)!r}, with_classes=True): this run explained "
            f"the fixed classes {index['run']['targets']}; no per-example "
            "classes are stored. Drop with_classes."
        )
    opened, cams, classes = {}, [], []
    for i in indices:
        shard, offset = where[i]
        for name in (shard["file"], shard.get("classes")):
            if name is not None and name not in opened:
                opened[name] = np.load(os.path.join(out, name), mmap_mode="r")
        cams.append(np.asarray(opened[shard["file"]][offset], dtype=np.float32))
        if with_classes:
            classes.append(np.asarray(opened[shard["classes"]][offset]))
    result = torch.from_numpy(np.stack(cams))
    return (result, torch.from_numpy(np.stack(classes))) if with_classes else result
