"""The model and data set of the explain_dataset tests, and a script that explains them.

    python tests/dataset_job.py OUT [--slow SECONDS]

The kill/resume test runs the script and kills it; the CLI tests name the factories
(``dataset_job:make_model``, ``dataset_job:Data``, ``dataset_job:uneven_data``).
Fixed seeds: every process builds the same model and data.
"""

import argparse
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gradcam_func as gf


class Data(torch.utils.data.Dataset):
    """n random 3x8x8 images with labels in 0..3."""

    def __init__(self, n=50):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 8, 8, generator=generator)
        self.labels = torch.randint(4, (n,), generator=generator)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def uneven_data():
    """51 examples: two ranks cannot split them evenly."""
    return Data(51)


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
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        Slow(slow),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).eval()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--slow", type=float, default=0.0)
    args = parser.parse_args()
    print(
        gf.explain_dataset(
            make_model(args.slow),
            "3",
            Data(),
            targets="label",
            out=args.out,
            batch_size=4,
            shard_size=8,
            progress=False,
        )
    )
