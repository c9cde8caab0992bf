"""Token layers: channels-last CAMs on a (h, w) patch grid, against a hand computation."""

import pytest
import torch
from torch import nn

import gradcam_func as gf
from conftest import assert_close, assert_matches
from gradcam_func._tokens import infer_token_grid, to_channels_first


class TinyViT(nn.Module):
    """16x16 images, 4x4 patches -> 16 tokens plus a class token, one encoder block."""

    def __init__(self, dim=12, classes=3):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.1 * torch.randn(1, 17, dim))
        self.block = nn.TransformerEncoderLayer(dim, 2, 24, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1) + self.pos
        return self.head(self.norm(self.block(tokens))[:, 0])


def test_token_grid_cam_equals_a_hand_computation():
    torch.manual_seed(0)
    model = TinyViT().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    output, acts, pullback = gf.layer_vjp(model, model.block, x)  # acts (2, 17, 12)
    grads = pullback(torch.eye(3, dtype=torch.float64)[[2, 2]])
    weights = grads[:, 1:].mean(1)  # (2, 12) per dim
    expected = (acts[:, 1:] * weights[:, None]).sum(-1).reshape(2, 1, 4, 4)
    got = gf.cam(model, model.block, x, 2, channel_axis=-1, token_grid=(4, 4), prefix_tokens=1)
    assert_close(got, expected)
    stacked = gf.cam(
        model,
        model.block,
        x,
        targets=[0, 2],
        channel_axis=-1,
        token_grid=(4, 4),
        prefix_tokens=1,
        method="layercam",
    )
    assert stacked.shape == (2, 2, 1, 4, 4)
    assert_close(
        stacked[1],
        gf.cam(
            model,
            model.block,
            x,
            2,
            channel_axis=-1,
            token_grid=(4, 4),
            prefix_tokens=1,
            method="layercam",
        ),
    )


class MeanPooledViT(TinyViT):
    """No class token: 16 patch tokens, averaged before the head."""

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.pos[:, 1:]
        return self.head(self.norm(self.block(tokens)).mean(1))


def test_a_grid_without_prefix_tokens_by_default():
    """prefix_tokens defaults to 0: all 16 tokens are the 4 x 4 grid."""
    torch.manual_seed(1)
    model = MeanPooledViT().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    _, acts, pullback = gf.layer_vjp(model, model.block, x)  # acts (2, 16, 12)
    grads = pullback(torch.eye(3, dtype=torch.float64)[[2, 2]])
    expected = (acts * grads.mean(1)[:, None]).sum(-1).reshape(2, 1, 4, 4)
    assert_close(gf.cam(model, model.block, x, 2, channel_axis=-1, token_grid=(4, 4)), expected)


def test_channels_last_without_a_grid_gives_one_value_per_token():
    torch.manual_seed(0)
    model = TinyViT().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    _, acts, pullback = gf.layer_vjp(model, model.block, x)
    grads = pullback(torch.eye(3, dtype=torch.float64)[[1, 1]])
    expected = (acts * grads.mean(1, keepdim=True)).sum(-1)[:, None]  # (2, 1, 17)
    assert_close(gf.cam(model, model.block, x, 1, channel_axis=-1), expected)


def test_a_grid_that_does_not_fit_is_refused():
    torch.manual_seed(0)
    model = TinyViT().double().eval()
    with pytest.raises(
        gf.GradCamError,
        match=r"token_grid=\(5, 5\), prefix_tokens=1\): "
        r"expected a token activation \(B, T, D\) with T - prefix_tokens = 25, "
        r"got shape \(2, 17, 12\)",
    ):
        gf.cam(
            model,
            model.block,
            torch.randn(2, 3, 16, 16, dtype=torch.float64),
            1,
            channel_axis=-1,
            token_grid=(5, 5),
            prefix_tokens=1,
        )


def test_token_grid_auto_finds_the_grid_and_the_class_token():
    torch.manual_seed(0)
    model = TinyViT().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    explicit = gf.cam(model, model.block, x, 2, channel_axis=-1, token_grid=(4, 4), prefix_tokens=1)
    inferred = gf.cam(model, model.block, x, 2, token_grid="auto")
    assert_close(inferred, explicit)
    assert infer_token_grid(17, (16, 16)) == (4, 4, 1)
    assert infer_token_grid(2 + 6 * 3, (48, 24)) == (6, 3, 2)  # two prefix tokens


def test_token_grid_auto_needs_tokens_and_an_image_and_says_so():
    acts = torch.zeros(2, 17, 12)
    with pytest.raises(
        gf.GradCamError,
        match=r"token_grid='auto'\): needs a token activation \(B, T, D\) and an image input "
        r"\(B, C, H, W\); got an activation of shape \(2, 17, 12, 1\) and inputs of size "
        r"\(16, 16\)\. Pass token_grid=\(h, w\) and prefix_tokens=n yourself\.",
    ):
        to_channels_first(acts[..., None], token_grid="auto", image_size=(16, 16))
    with pytest.raises(gf.GradCamError, match=r"got an activation of shape \(2, 17, 12\)\. Pass"):
        to_channels_first(acts, token_grid="auto", image_size=None)
    with pytest.raises(
        gf.GradCamError,
        match=r"got an activation of shape \(2, 17, 12\) and inputs of size \(16, 16, 3\)",
    ):
        to_channels_first(acts, token_grid="auto", image_size=(16, 16, 3))
    with pytest.raises(
        gf.GradCamError,
        match=r"14 tokens for a 16 x 16 image fit no grid of the image.s shape after 0 to 8 prefix tokens\. Pass token_grid=\(h, w\) and prefix_tokens=n yourself\.$",
    ):
        infer_token_grid(5 + 9, (16, 16))


@pytest.mark.parametrize(
    "tokens, image_size, grid",
    [
        (8 + 16, (16, 16), (4, 4, 8)),  # eight prefix tokens (registers) are the most allowed
        (4, (4, 16), (1, 4, 0)),  # one row of patches
        (4, (16, 4), (4, 1, 0)),  # one column
    ],
)
def test_token_grids_at_the_edges_of_the_search(tokens, image_size, grid):
    assert infer_token_grid(tokens, image_size) == grid


def test_token_grid_auto_refuses_nine_prefix_tokens_and_ambiguous_counts():
    with pytest.raises(gf.GradCamError, match=r"25 tokens for a 16 x 16 image fit no grid"):
        infer_token_grid(9 + 16, (16, 16))
    with pytest.raises(
        gf.GradCamError,
        match=r"^cam\(\.\.\., token_grid='auto'\): 5 tokens for a 8 x 8 image fit 2 grids "
        r"\(token_grid=\(2, 2\), prefix_tokens=1; token_grid=\(1, 1\), prefix_tokens=4\)\. "
        r"Pass token_grid=\(h, w\) and prefix_tokens=n yourself\.$",
    ):
        infer_token_grid(5, (8, 8))
    with pytest.raises(  # the most that can fit: patches of 6, 3 and 2 pixels
        gf.GradCamError,
        match=r"9 tokens for a 6 x 6 image fit 3 grids \(token_grid=\(3, 3\), prefix_tokens=0; "
        r"token_grid=\(2, 2\), prefix_tokens=5; token_grid=\(1, 1\), prefix_tokens=8\)\. ",
    ):
        infer_token_grid(9, (6, 6))


def test_ablation_cam_on_a_token_grid_equals_a_loop(cam_at):
    """Ablation-CAM with channel_axis=-1, token_grid=(4, 4), prefix_tokens=1, at the layer
    and at a list of it: each of the 12 dims zeroed in every token in turn, (y - y_d) / y
    its weight, the patch tokens' weighted sum laid on the grid."""
    torch.manual_seed(0)
    model = TinyViT().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    kept = []
    handle = model.block.register_forward_hook(lambda _, __, out: kept.append(out))
    with torch.no_grad():
        y = model(x)[:, 2]
    handle.remove()
    acts, weights = kept[0], []
    for d in range(acts.shape[-1]):

        def ablate(_, __, out, d=d):
            out = out.clone()
            out[..., d] = 0.0
            return out

        handle = model.block.register_forward_hook(ablate)
        with torch.no_grad():
            weights.append((y - model(x)[:, 2]) / y)
        handle.remove()
    w = torch.stack(weights, 1)  # (2, 12)
    expected = (acts[:, 1:] * w[:, None]).sum(-1).reshape(2, 1, 4, 4)
    got = cam_at(
        model,
        model.block,
        x,
        2,
        method="ablationcam",
        channel_axis=-1,
        token_grid=(4, 4),
        prefix_tokens=1,
    )
    assert_matches(got, expected)


class ShiftedViT(MeanPooledViT):
    """MeanPooledViT's logits plus a per-example shift, its second input (B, 3)."""

    def forward(self, x, shift):
        return super().forward(x) + shift


def test_token_grid_auto_reads_the_image_size_from_the_first_input():
    """token_grid='auto' with inputs (image, shift): LayerCAM (the 16 patch tokens'
    sum_d relu(g_d) A_d) by autograd, on the 4 x 4 grid that the image's 16 x 16 implies."""
    torch.manual_seed(0)
    model = ShiftedViT().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    shift = torch.randn(2, 3, dtype=torch.float64)
    kept = []

    def keep(_, __, out):
        out.retain_grad()
        kept.append(out)

    handle = model.block.register_forward_hook(keep)
    model(x, shift)[:, 2].sum().backward()
    handle.remove()
    model.zero_grad()
    acts = kept[0]
    expected = (acts.grad.clamp_min(0) * acts).sum(-1).reshape(2, 1, 4, 4).detach()
    got = gf.cam(model, model.block, (x, shift), 2, method="layercam", token_grid="auto")
    assert_matches(got, expected)
