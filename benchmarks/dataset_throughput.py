"""explain_dataset throughput: examples per second for 1 and 2 processes, K = 1 and 10,
against the loop a Captum user writes over a DataLoader.

    python benchmarks/dataset_throughput.py [--device cpu]

A ResNet-18 at width 16 on 8,192 random 64x64 images (`layer4`, batch 64, float16
shards). Two processes run under torchrun with the gloo backend, each explaining half
the data set with torch limited to one thread, against one process with two threads.
The Captum loop (one process): per batch of the same DataLoader, one
``LayerGradCam.attribute`` per class, the K maps stacked, cast to float16 and saved
with ``torch.save`` every 512 examples. Prints the wall time of the whole command
(start-up included) and the time spent inside the explaining (the slowest rank's),
with examples per second for each.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
N = 8192


class Images(torch.utils.data.Dataset):
    def __init__(self):
        self.images = torch.randn(N, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return N

    def __getitem__(self, i):
        return self.images[i]


def make_model():
    from resnet import resnet18

    torch.manual_seed(0)
    return resnet18(num_classes=100, width=16).eval()


def captum_job(out, k, device):
    """The Captum user's loop over a DataLoader, K attribute calls per batch."""
    from captum.attr import LayerGradCam

    model = make_model().to(device)
    explainer = LayerGradCam(model, model.layer4)
    loader = torch.utils.data.DataLoader(Images(), batch_size=64)
    start = time.perf_counter()
    shard, written = [], 0
    for x in loader:
        x = x.to(device)
        cams = torch.stack([explainer.attribute(x, c).detach() for c in range(k)], 1)
        shard.append(cams.half().cpu())
        if sum(len(c) for c in shard) >= 512:
            torch.save(torch.cat(shard), os.path.join(out, f"shard_{written:05d}.pt"))
            shard, written = [], written + 1
    if shard:
        torch.save(torch.cat(shard), os.path.join(out, f"shard_{written:05d}.pt"))
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


def job(out, k, device):
    """One run (a rank, under torchrun): explain everything for classes 0..k-1."""
    import gradcam_func as gf

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        torch.set_num_threads(1)
        torch.distributed.init_process_group("gloo")
    try:
        summary = gf.explain_dataset(
            make_model().to(device),
            "layer4",
            Images(),
            targets=list(range(k)),
            out=out,
            batch_size=64,
            shard_size=512,
            progress=False,
        )
        print(json.dumps(summary), flush=True)
    finally:
        if distributed:
            torch.distributed.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(command):
    """(wall seconds of the command, seconds inside explain_dataset of its slowest rank)."""
    start = time.perf_counter()
    result = subprocess.run(command, check=True, cwd=HERE, capture_output=True, text=True)
    wall = time.perf_counter() - start
    summaries = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return wall, max(summary["seconds"] for summary in summaries)


def main(device):
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}")
    print(
        "| way | processes | K | wall s (incl. start-up) | examples/s | explaining s | examples/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for k in (1, 10):
        for way, processes in (("explain_dataset", 1), ("explain_dataset", 2), ("Captum", 1)):
            out = tempfile.mkdtemp()
            try:
                if way == "Captum":
                    command = [sys.executable, __file__, "--captum-job", out, str(k), device]
                elif processes == 1:
                    command = [sys.executable, __file__, "--job", out, str(k), device]
                else:
                    command = [
                        sys.executable,
                        "-m",
                        "torch.distributed.run",
                        "--nproc_per_node",
                        "2",
                        "--master_addr",
                        "127.0.0.1",
                        "--master_port",
                        str(free_port()),
                        __file__,
                        "--job",
                        out,
                        str(k),
                        device,
                    ]
                wall, inside = timed(command)
            finally:
                shutil.rmtree(out)
            print(
                f"| {way} | {processes} | {k} | {wall:.1f} | {N / wall:.0f} | {inside:.1f} "
                f"| {N / inside:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    if sys.argv[1:2] in (["--job"], ["--captum-job"]):
        sys.path.insert(0, HERE)
        run_job = job if sys.argv[1] == "--job" else captum_job
        run_job(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main(sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cpu")
