"""A small explain_dataset run, as a script: for the kill/resume and torchrun tests.

    python tests/dataset_job.py OUT [--slow SECONDS] [--targets label|top2|0,2]

Builds the same model and data set every time (fixed seeds). Under torchrun it joins
a gloo process group first.
"""

import argparse
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gradcam_func as gf  # noqa: E402


class Data(torch.utils.data.Dataset):
    def __init__(self, n=50):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 8, 8, generator=generator)
        self.labels = torch.randint(4, (n,), generator=generator)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


class Slow(nn.Module):
    """Identity that sleeps, so a test can kill the run between shards."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


def make_model(slow=0.0):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), Slow(slow),
                         nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()


def parse_targets(text):
    if text == "label":
        return "label"
    if text.startswith("top"):
        return gf.top_k(int(text[3:]))
    return [int(t) for t in text.split(",")]


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--targets", default="label")
    args = parser.parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        torch.distributed.init_process_group("gloo")
    try:
        summary = gf.explain_dataset(make_model(args.slow), "3", Data(),
                                     targets=parse_targets(args.targets), out=args.out,
                                     batch_size=4, shard_size=8, progress=False)
    finally:
        if distributed:
            torch.distributed.destroy_process_group()
    print(summary)


if __name__ == "__main__":
    main()
