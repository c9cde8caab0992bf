"""explain_dataset: equal to direct calls, resumes after a kill, refuses other arguments,
two torchrun processes (gloo) give the single-process result, and the CLI."""

import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import gradcam_func as gf
from conftest import assert_close, assert_not_zero, exactly
from dataset_job import Data, make_model, uneven_data
from gradcam_func.__main__ import main as cli

HERE = os.path.dirname(os.path.abspath(__file__))
JOB = os.path.join(HERE, "dataset_job.py")


def direct(targets, images=None):
    """(N, K, 1, H, W): one grad_cam call on the whole data set, reordered like load_cams."""
    images = Data().images if images is None else images
    return gf.grad_cam(make_model(), "3", images, targets=targets).transpose(0, 1)


def explain(out, targets=(1,), data=None, model=None, **options):
    options = {"batch_size": 4, "shard_size": 8, "progress": False, **options}
    return gf.explain_dataset(
        model or make_model(),
        options.pop("layer", "3"),
        Data() if data is None else data,
        targets=targets,
        out=out,
        **options,
    )


@pytest.mark.parametrize("targets", [[0, 2], "label"])
def test_equals_direct_grad_cam(tmp_path, targets):
    data = Data()
    summary = explain(tmp_path, targets, dtype=torch.float32)
    assert summary == {
        **summary,
        "examples": 50,
        "examples_resumed": 0,
        "shards_written": 7,
        "shards_resumed": 0,
    }
    expected = direct([data.labels] if targets == "label" else targets)
    assert_close(gf.load_cams(tmp_path), expected)
    picked = [49, 3, 17]
    assert_close(gf.load_cams(tmp_path, picked), expected[picked])
    if targets == "label":
        _, classes = gf.load_cams(tmp_path, picked, with_classes=True)
        assert torch.equal(classes[:, 0], data.labels[picked])


def test_top_k_stores_the_classes_and_float16_is_close(tmp_path):
    data = Data()
    explain(tmp_path, gf.top_k(2), upsample_to=16)
    cams, classes = gf.load_cams(tmp_path, with_classes=True)
    expected, expected_classes = gf.grad_cam(make_model(), "3", data.images, targets=gf.top_k(2))
    assert torch.equal(classes, expected_classes.T)
    upsampled = gf.interpolate(expected.flatten(0, 1), (16, 16), "bilinear")
    expected = upsampled.reshape(2, 50, 1, 16, 16).transpose(0, 1)
    # Stored as float16: each value within float16's rounding (2^-11 relative) of the
    # float32 map, plus an absolute 1e-3 of the map's scale for values float16 stores as
    # subnormals. Most of this map is below 1e-3, so a fixed atol would let a map scaled
    # by 0.75 pass; this one does not.
    close = dict(rtol=1e-3, atol=1e-3 * expected.abs().max().item())
    assert_not_zero(expected)
    torch.testing.assert_close(cams, expected, **close)
    assert not torch.allclose(cams * 0.75, expected, **close)
    with pytest.raises(
        gf.GradCamError, match=r"\(targets: recorded 'top_k\(2\)', now 'top_k\(3\)'\)"
    ):
        explain(tmp_path, gf.top_k(3), upsample_to=16)


WORKER = {"factor": 3}  # the worker_init_fn below sets 2 in the worker


def set_factor(worker_id):
    WORKER["factor"] = 2


def doubled(items):
    """A collate function whose effect shows in the CAMs: images doubled in a spawned
    worker that ran ``set_factor`` (tripled otherwise, so a context or an init function
    not lent shows)."""
    images, labels = torch.utils.data.default_collate(items)
    spawned = multiprocessing.get_start_method(allow_none=True) == "spawn"
    return (WORKER["factor"] if spawned else 3) * images, labels


def test_a_dataloader_lends_its_batch_size_workers_and_collate(tmp_path):
    # spawn, not fork: the suite has started JAX's threads by now, and forking a
    # multithreaded process can deadlock; the context is lent like the rest.
    loader = torch.utils.data.DataLoader(
        Data(),
        batch_size=16,
        num_workers=1,
        collate_fn=doubled,
        multiprocessing_context="spawn",
        worker_init_fn=set_factor,
    )
    model = make_model()
    sizes = []
    model[2].register_forward_hook(lambda m, i, o: None if o.is_meta else sizes.append(len(o)))
    gf.explain_dataset(
        model,
        "3",
        loader,
        targets=[1],
        out=tmp_path,
        shard_size=32,
        dtype=torch.float32,
        progress=False,
    )
    assert max(sizes) == 16
    assert_close(gf.load_cams(tmp_path), direct([1], 2 * Data().images))


def test_items_whose_second_part_is_not_a_label_work_with_fixed_classes(tmp_path):
    class WithMasks(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return Data().images[i], torch.ones(8, 8)

    explain(tmp_path, [3], data=WithMasks(), dtype=torch.float32)
    assert_close(gf.load_cams(tmp_path), direct([3])[:10])


class Items(torch.utils.data.Dataset):
    """Data()'s first 10 images, each wrapped by ``wrap``."""

    def __init__(self, wrap):
        self.wrap = wrap

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return self.wrap(Data().images[i])


def test_items_of_one_tensor_in_a_tuple_work_with_fixed_classes_only(tmp_path):
    explain(tmp_path / "fixed", [3], data=Items(lambda image: (image,)), dtype=torch.float32)
    expected = direct([3])[:10]
    assert_not_zero(expected)
    assert_close(gf.load_cams(tmp_path / "fixed"), expected)
    with pytest.raises(
        gf.GradCamError,
        match=r"^explain_dataset\(\.\.\., targets='label'\): each example must be a pair "
        r"\(Tensor, int label\); the batch's labels are None\.",
    ):
        explain(tmp_path / "label", "label", data=Items(lambda image: (image,)))


# Without a GPU, torch says that pinning is skipped; the flag is still handed on.
@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true:UserWarning")
def test_the_loader_lends_pin_memory_and_a_plain_dataset_gets_no_workers(tmp_path, monkeypatch):
    """The loader explain_dataset builds, as it was made (pinning shows only on a GPU)."""
    made = []

    class Recorded(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append((self.num_workers, self.pin_memory))

    given = torch.utils.data.DataLoader(Data(), batch_size=4, pin_memory=True)
    monkeypatch.setattr(torch.utils.data, "DataLoader", Recorded)
    explain(tmp_path / "loader", data=given)
    explain(tmp_path / "dataset", data=Data())
    assert made == [(0, True), (0, False)]


@pytest.mark.parametrize(
    "wrap, collated",
    [(lambda image: {"image": image}, "dict"), (lambda image: ("name", image), "list")],
)
def test_items_that_are_not_a_tensor_first_are_refused(tmp_path, wrap, collated):
    message = (
        "explain_dataset(..., data=...): each example must be a Tensor or a tuple (Tensor, "
        f"label, ...); a batch of them collated to {collated}."
    )
    with pytest.raises(gf.GradCamError, match=exactly(message)):
        explain(tmp_path, [3], data=Items(wrap))


def test_a_folder_whose_record_lacks_or_adds_an_argument_is_refused(tmp_path):
    """A run.json written by another version, with a key fewer or one more."""
    explain(tmp_path, [1])
    path = tmp_path / "run.json"
    recorded = json.loads(path.read_text())
    for changed, detail in [
        ({k: v for k, v in recorded.items() if k != "relu"}, "relu: recorded None, now False"),
        ({**recorded, "chunk": 4}, "chunk: recorded 4, now None"),
    ]:
        path.write_text(json.dumps(changed))
        with pytest.raises(gf.GradCamError, match=re.escape(f"other arguments ({detail})")):
            explain(tmp_path, [1])


def test_resumes_after_a_kill_without_redoing_shards(tmp_path):
    job = subprocess.Popen(
        [sys.executable, JOB, str(tmp_path), "--slow", "0.3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    index = tmp_path / "index-r0.json"
    deadline = time.time() + 60
    while time.time() < deadline:
        if index.exists() and len(json.loads(index.read_text())["shards"]) >= 2:
            break
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    completed = len(json.loads(index.read_text())["shards"])
    assert 2 <= completed < 7 and not (tmp_path / "index.json").exists()

    model = make_model()
    seen = []
    # count real examples (the shape probe runs on the meta device)
    model[2].register_forward_hook(lambda m, i, o: seen.append(len(o) * (not o.is_meta)))
    summary = explain(tmp_path, "label", model=model)
    assert summary["shards_resumed"] == completed
    assert sum(seen) == summary["examples"] == 50 - 8 * completed  # none explained twice
    expected = direct([Data().labels]).to(torch.float16).to(torch.float32)
    assert_close(gf.load_cams(tmp_path), expected)


STALE = [
    "r0-00002.npy.tmp-1",
    "index-r0.json.tmp-1",
    "r1-00000.npy.tmp-1",
    "index-r1.json.tmp-1",
    "run.json.tmp-1",
    "index.json.tmp-1",
]


def test_a_restart_removes_its_own_temporary_files_only(tmp_path):
    """Rank 0 owns run.json and index.json besides its shards and index."""
    explain(tmp_path)
    for name in STALE:
        (tmp_path / name).write_text("")
    assert explain(tmp_path)["shards_resumed"] == 7
    assert sorted(p.name for p in tmp_path.glob("*.tmp-*")) == [
        "index-r1.json.tmp-1",
        "r1-00000.npy.tmp-1",
    ]


def as_rank(monkeypatch, rank, world, barrier=lambda: None):
    """Make explain_dataset see this process as ``rank`` of ``world`` under torch.distributed."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: rank)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: world)
    monkeypatch.setattr(torch.distributed, "barrier", barrier)


def test_rank_0_of_several_waits_for_the_others_and_names_itself(tmp_path, monkeypatch, capsys):
    """Every rank waits once the folder is checked and once its shards are written;
    rank 0 merges the indices only after the second wait."""
    waits = []

    def barrier():
        waits.append((len(list(tmp_path.glob("r0-*.npy"))), (tmp_path / "index.json").exists()))

    as_rank(monkeypatch, 0, 2, barrier)
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "index-r1.json").write_text(json.dumps({"rank": 1, "shards": []}))
    assert explain(tmp_path, progress=True)["examples"] == 25
    assert waits == [(0, False), (4, False)]
    index = json.loads((tmp_path / "index-r0.json").read_text())
    assert index["rank"] == 0 and len(index["shards"]) == 4
    bar = capsys.readouterr().err
    assert "explaining (rank 0 of 2): 100%" in bar and "25/25" in bar


def test_another_rank_leaves_rank_0s_temporary_files_and_shows_no_bar(
    tmp_path, monkeypatch, capsys
):
    as_rank(monkeypatch, 1, 2)
    tmp_path.mkdir(exist_ok=True)
    for name in STALE:
        (tmp_path / name).write_text("")
    explain(tmp_path, progress=True)
    assert capsys.readouterr().err == ""
    assert sorted(p.name for p in tmp_path.glob("*.tmp-*")) == [
        "index-r0.json.tmp-1",
        "index.json.tmp-1",
        "r0-00002.npy.tmp-1",
        "run.json.tmp-1",
    ]


def test_a_rank_without_examples_still_leaves_an_index_for_the_merge(tmp_path, monkeypatch):
    as_rank(monkeypatch, 55, 60)
    assert explain(tmp_path)["examples"] == 0  # 50 examples: ranks 50..59 of 60 have none
    assert json.loads((tmp_path / "index-r55.json").read_text()) == {"rank": 55, "shards": []}


def test_refuses_a_folder_with_other_arguments(tmp_path):
    explain(tmp_path, [1])
    with pytest.raises(
        gf.GradCamError,
        match=exactly(
            f"explain_dataset(..., out={str(tmp_path)!r}): the folder holds a run with other "
            "arguments (targets: recorded [1], now [2]). Use a new folder, or the same "
            "arguments to resume."
        ),
    ):
        explain(tmp_path, [2])
    other = make_model()
    with torch.no_grad():
        other[0].weight.add_(1)
    with pytest.raises(gf.GradCamError, match=r"\(model: recorded '[0-9a-f]+', now '[0-9a-f]+'\)"):
        explain(tmp_path, [1], model=other)
    model = make_model()  # a layer given as a module is recorded by its name
    with pytest.raises(gf.GradCamError, match=r"\(layer: recorded '3', now '0'\)"):
        explain(tmp_path, [1], model=model, layer=model[0])
    with pytest.raises(
        gf.GradCamError,
        match=r"\(dtype: recorded 'torch.float16', now "
        r"'torch.float32'; examples: recorded 50, now 49\)",
    ):
        explain(tmp_path, [1], data=Data(49), dtype=torch.float32)
    assert explain(tmp_path, [1], model=model, layer=model[3])["shards_resumed"] == 7


def test_a_plain_function_model_resumes_by_its_name(tmp_path):
    net = make_model()

    def model(x):
        return net(x)

    assert explain(tmp_path, [1], model=model, layer=net[3])["shards_written"] == 7
    assert explain(tmp_path, [1], model=model, layer=net[3])["shards_resumed"] == 7
    recorded = json.loads((tmp_path / "run.json").read_text())["model"]
    assert recorded == f"{__name__}.test_a_plain_function_model_resumes_by_its_name.<locals>.model"

    def other(x):
        return net(x)

    with pytest.raises(
        gf.GradCamError,
        match=re.escape(f"(model: recorded {recorded!r}, now {recorded[:-5] + 'other'!r})"),
    ):
        explain(tmp_path, [1], model=other, layer=net[3])
    with pytest.raises(
        gf.GradCamError,
        match=r"\(layer: recorded 'Conv2d:[0-9a-f]+', now "
        r"'Conv2d:[0-9a-f]+'\)",
    ):
        explain(tmp_path, [1], model=model, layer=net[0])


class Scorer:
    """A model that is a callable object, which has no ``__qualname__`` of its own."""

    def __init__(self, net):
        self.net = net

    def __call__(self, x):
        return self.net(x)


def test_a_callable_object_model_is_recorded_by_its_class(tmp_path):
    net = make_model()
    explain(tmp_path, [1], model=Scorer(net), layer=net[3])
    assert json.loads((tmp_path / "run.json").read_text())["model"] == f"{__name__}.Scorer"
    assert explain(tmp_path, [1], model=Scorer(net), layer=net[3])["shards_resumed"] == 7


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(Data().images)


class ImagesOnly(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return Data().images[i]


class IndexedStream(Stream, ImagesOnly):
    """An IterableDataset that also has __len__ and __getitem__: still a stream."""


class Sized:
    """Has a length but cannot be indexed."""

    def __len__(self):
        return 4


MAP_STYLE = (
    "expected a map-style Dataset (with __len__ and __getitem__) or a DataLoader over one, "
    "since resuming and splitting across processes address examples by index. Wrap the "
    "examples in a Dataset that indexes them."
)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            dict(targets="labels"),
            r"explain_dataset\(\.\.\., targets='labels'\): expected a "
            r"non-empty list of class indices, the string 'label'",
        ),
        (dict(targets=[]), r"targets=\[\]\): expected a non-empty list"),
        (dict(targets=[1.5]), r"^explain_dataset\(\.\.\., targets=\[1\.5\]\): expected a"),
        (dict(targets=[True]), r"^explain_dataset\(\.\.\., targets=\[True\]\): expected a"),
        (
            dict(data=Stream()),
            exactly("explain_dataset(..., data=Stream): " + MAP_STYLE),
        ),
        (dict(data=IndexedStream()), r"^explain_dataset\(\.\.\., data=IndexedStream\): expected"),
        (dict(data=Sized()), r"^explain_dataset\(\.\.\., data=Sized\): expected a map-style"),
        (
            dict(data=ImagesOnly(), targets="label"),
            r"explain_dataset\(\.\.\., targets='label'\): "
            r"each example must be a pair \(Tensor, int "
            r"label\); .* or pass a list of classes",
        ),
        (dict(batch_size=0), r"explain_dataset\(\.\.\., batch_size=0\): expected a positive int"),
        (dict(batch_size=True), r"^explain_dataset\(\.\.\., batch_size=True\): expected a pos"),
        (dict(shard_size=1.5), r"^explain_dataset\(\.\.\., shard_size=1\.5\): expected a pos"),
        (dict(layer="9"), r"explain_dataset\(\.\.\., layer='9'\): the model has no submodule"),
    ],
)
def test_argument_errors(tmp_path, arguments, message):
    with pytest.raises(gf.GradCamError, match=message):
        explain(tmp_path, **arguments)


def test_one_example_per_batch_and_per_shard(tmp_path):
    data = Data(3)
    start = time.perf_counter()
    summary = explain(tmp_path, [1, 2], data=data, batch_size=1, shard_size=1)
    assert 0 < summary["seconds"] <= time.perf_counter() - start
    assert summary["shards_written"] == 3
    expected = direct([1, 2], data.images)
    assert_not_zero(expected)
    assert_close(gf.load_cams(tmp_path).float(), expected.half().float())


def test_by_default_batches_of_64_fill_shards_of_512_with_a_progress_bar(tmp_path, capsys):
    model = make_model()
    sizes = set()
    hook = model[0].register_forward_hook(lambda module, args, out: sizes.add(len(args[0])))
    gf.explain_dataset(model, "3", Data(513), targets=[1], out=tmp_path)
    hook.remove()
    assert sizes == {64, 1}
    shards = json.loads((tmp_path / "index.json").read_text())["shards"]
    assert [len(shard["indices"]) for shard in shards] == [512, 1]
    bar = capsys.readouterr().err
    assert "explaining: 100%" in bar and "513/513" in bar and "ex/s]" in bar


def test_the_progress_bar_counts_resumed_examples_and_can_be_turned_off(tmp_path, capsys):
    explain(tmp_path)
    assert capsys.readouterr().err == ""  # progress=False
    explain(tmp_path, progress=True)
    bar = capsys.readouterr().err
    assert "explaining: 100%" in bar and "50/50" in bar


def test_run_json_records_every_argument_that_changes_the_cams(tmp_path):
    model = make_model()
    explain(tmp_path, gf.top_k(2), model=model, upsample_to=(16, 12), relu=True)
    recorded = json.loads((tmp_path / "run.json").read_text())
    assert recorded == {
        "model": recorded["model"],
        "layer": "3",
        "targets": "top_k(2)",
        "examples": 50,
        "shard_size": 8,
        "upsample_to": [16, 12],
        "dtype": "torch.float16",
        "relu": True,
        "world_size": 1,
    }
    assert re.fullmatch("[0-9a-f]{16}", recorded["model"])
    with pytest.raises(
        gf.GradCamError, match=re.escape("(upsample_to: recorded [16, 12], now [12, 12])")
    ):
        explain(tmp_path, gf.top_k(2), model=model, upsample_to=12, relu=True)


def test_a_model_without_parameters(tmp_path):
    """Channel means as class scores: nothing to learn, so no parameter to take a device
    from; the batches stay on the CPU."""
    model = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    explain(tmp_path, [0, 2], model=model, layer="0", dtype=torch.float32)
    expected = gf.grad_cam(model, "0", Data().images, targets=[0, 2]).transpose(0, 1)
    assert_not_zero(expected)
    assert_close(gf.load_cams(tmp_path), expected)


def test_load_cams_errors(tmp_path):
    with pytest.raises(
        gf.GradCamError,
        match=exactly(
            f"load_cams({str(tmp_path)!r}): no index.json there; the run has not finished "
            "(start it again with the same arguments to resume)."
        ),
    ):
        gf.load_cams(tmp_path)
    explain(tmp_path, [0])
    with pytest.raises(
        gf.GradCamError,
        match=exactly(
            f"load_cams({str(tmp_path)!r}, indices=...): examples [50, 51, 52, 53, 54] are not "
            "in the run, which explained examples 0..49."
        ),
    ):
        gf.load_cams(tmp_path, [3, *range(50, 57)])
    with pytest.raises(
        gf.GradCamError,
        match=exactly(
            f"load_cams({str(tmp_path)!r}, with_classes=True): this run explained the fixed "
            "classes [0]; no per-example classes are stored. Drop with_classes."
        ),
    ):
        gf.load_cams(tmp_path, with_classes=True)


def test_load_cams_maps_the_shards_instead_of_reading_them(tmp_path, monkeypatch):
    explain(tmp_path, gf.top_k(2), dtype=torch.float32)
    opened = []

    def load(*args, **kwargs):
        array = numpy_load(*args, **kwargs)
        opened.append(type(array))
        return array

    numpy_load = np.load
    monkeypatch.setattr(np, "load", load)
    cams, classes = gf.load_cams(tmp_path, [9, 0], with_classes=True)
    assert opened == [np.memmap] * 4  # two shards, each with its classes
    expected, expected_classes = gf.grad_cam(make_model(), "3", Data().images, targets=gf.top_k(2))
    assert_not_zero(expected[:, [9, 0]])
    assert_close(cams, expected.transpose(0, 1)[[9, 0]])
    assert torch.equal(classes, expected_classes.T[[9, 0]])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_arguments(out, *targets):
    return [
        "explain-dataset",
        "--model",
        "dataset_job:make_model",
        "--layer",
        "3",
        "--targets",
        *targets,
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--shard-size",
        "8",
        "--no-progress",
    ]


def test_two_gloo_processes_equal_one(tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    explain(single, gf.top_k(2), data=uneven_data())
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            "-m",
            "gradcam_func",
            *cli_arguments(double, "top:2"),
            "--data",
            "dataset_job:uneven_data",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": HERE},
    )
    shards = json.loads((double / "index.json").read_text())["shards"]
    assert sorted(i for s in shards for i in s["indices"]) == list(range(51))  # once each
    for shard in shards:  # rank r explains r, r + 2, r + 4, ...
        rank = int(shard["file"][1])
        assert {i % 2 for i in shard["indices"]} == {rank}
    assert {s["file"][:2] for s in shards} == {"r0", "r1"}
    a, classes_a = gf.load_cams(single, with_classes=True)
    b, classes_b = gf.load_cams(double, with_classes=True)
    assert torch.equal(a, b) and torch.equal(classes_a, classes_b)


def test_cli_explains_each_example_for_its_label(tmp_path, capsys):
    assert (
        cli(
            [
                *cli_arguments(tmp_path, "label"),
                "--data",
                "dataset_job:Data",
                "--dtype",
                "float32",
                "--upsample-to",
                "16",
                "16",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["examples"] == 50
    cams, classes = gf.load_cams(tmp_path, with_classes=True)
    expected = gf.interpolate(direct([Data().labels])[:, 0], (16, 16), "bilinear")
    assert_close(cams[:, 0], expected)
    assert torch.equal(classes[:, 0], Data().labels)


@pytest.mark.parametrize(
    "option, value, message",
    [
        (
            "--targets",
            "top:x",
            r"gradcam-func explain-dataset --targets top:x: expected class "
            r"indices \(0 3 7\), 'label', or 'top:K'",
        ),
        ("--data", "dataset_job", r"--data dataset_job: expected module:function"),
        (
            "--data",
            "dataset_job:nothing",
            r"--data dataset_job:nothing: cannot import it \(.*"
            r"nothing.*\)\. Check that the module is on PYTHONPATH",
        ),
    ],
)
def test_cli_errors(tmp_path, option, value, message):
    arguments = cli_arguments(tmp_path, "0") + ["--data", "dataset_job:Data"]
    arguments[arguments.index(option) + 1] = value
    with pytest.raises(gf.GradCamError, match=message):
        cli(arguments)


def test_cli_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        cli(["explain-dataset", "--help"])
    help_text = capsys.readouterr().out
    for option in (
        "--model",
        "--data",
        "--layer",
        "--targets",
        "--out",
        "--batch-size",
        "--shard-size",
        "--upsample-to",
        "--dtype",
        "--relu",
        "--device",
    ):
        assert option in help_text
