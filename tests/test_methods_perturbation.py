"""Gradient-free methods against their papers' definitions written as plain loops (one
masked or ablated forward at a time), in each convention, and on known answers."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradcam_func as gf
from conftest import assert_close, assert_matches, assert_not_zero
from test_methods_gradient import first_component_by_hand, svd_projection_by_hand


class Net(nn.Module):
    """conv -> ReLU -> conv (the layer) -> ReLU -> pool -> linear."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.layer = nn.Conv2d(4, 5, 3, padding=1, stride=2)
        self.head = nn.Linear(5, 4)

    def forward(self, x):
        x = torch.relu(self.layer(torch.relu(self.stem(x))))
        return self.head(x.mean((2, 3)))


def setup():
    model = Net().double().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        acts = model.layer(torch.relu(model.stem(x)))  # (2, 5, 4, 4)
    return model, x, acts


def minmax(t, eps=0.0):
    low, high = t.min(), t.max()
    return (t - low) / (high - low + eps) if high > low or eps else torch.zeros_like(t)


def score_cam_loop(model, x, acts, cls, convention, sum_channels=True):
    """Wang et al.'s Score-CAM one masked image at a time; the libraries' variants.
    (B, 1, H, W), or (B, C, H, W) per channel without ``sum_channels``."""
    cams = []
    with torch.no_grad():
        clean = model(x)
        for b in range(len(x)):
            scores = []
            for c in range(acts.shape[1]):
                a = acts[b, c][None, None]
                if convention == "torchcam":
                    mask = F.interpolate(
                        minmax(a), size=(8, 8), mode="bilinear", align_corners=False
                    )
                elif convention == "pytorch-grad-cam":
                    mask = minmax(
                        F.interpolate(a, size=(8, 8), mode="bilinear", align_corners=True), eps=1e-8
                    )
                else:
                    mask = minmax(
                        F.interpolate(a, size=(8, 8), mode="bilinear", align_corners=False)
                    )
                out = model(x[b : b + 1] * mask[0])
                if convention == "paper":
                    scores.append(out.softmax(1)[0, cls])
                elif convention == "torchcam":
                    scores.append(out[0, cls] - clean[b, cls])
                else:
                    scores.append(out[0, cls])
            w = torch.stack(scores)
            if convention != "paper":
                w = w.softmax(0)
            weighted = w.view(-1, 1, 1) * acts[b]
            cams.append(weighted.sum(0, keepdim=True) if sum_channels else weighted)
    return torch.stack(cams)


@pytest.mark.parametrize("convention", ["paper", "pytorch-grad-cam", "torchcam"])
def test_score_cam_equals_the_loop(convention, cam_at):
    model, x, acts = setup()
    for cls in (0, 3):
        ours = cam_at(
            model, "layer", x, cls, method="scorecam", convention=convention, batch_size=3
        )
        assert_matches(ours, score_cam_loop(model, x, acts, cls, convention))


def test_smoothed_and_integrated_score_cam_equal_the_loop(cam_at):
    """SS-CAM: noise on the [0, 1] masks, drawn for all B * C * N copies at once (one
    batch); IS-CAM: masks scaled by the cumulative sums of i / N. Both: the increase of
    the logit over the clean input's, averaged over samples, softmax over channels."""
    model, x, acts = setup()
    n, sigma = 3, 0.5
    masks = torch.stack(
        [
            torch.stack(
                [
                    minmax(
                        F.interpolate(
                            acts[b, c][None, None],
                            size=(8, 8),
                            mode="bilinear",
                            align_corners=False,
                        )
                    )[0]
                    for c in range(5)
                ]
            )
            for b in range(2)
        ]
    )  # (B, C, 1, 8, 8)
    noise = sigma * torch.randn(
        (2 * 5 * n, 1, 8, 8), generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    coefficients = torch.cumsum(torch.arange(1, n + 1) / n, 0)
    with torch.no_grad():
        clean = model(x)
        for method in ("sscam", "iscam"):
            expected = []
            for b in range(2):
                gains = torch.zeros(5, dtype=torch.float64)
                for c in range(5):
                    for i in range(n):
                        if method == "sscam":
                            mask = masks[b, c] + noise[(b * 5 + c) * n + i]
                        else:
                            mask = coefficients[i] * masks[b, c]
                        gains[c] += (model(x[b : b + 1] * mask)[0, 2] - clean[b, 2]) / n
                expected.append((gains.softmax(0).view(-1, 1, 1) * acts[b]).sum(0, keepdim=True))
            ours = cam_at(
                model,
                "layer",
                x,
                2,
                method=method,
                samples=n,
                noise=sigma,
                batch_size=1000,
                generator=torch.Generator().manual_seed(4),
            )
            assert_matches(ours, torch.stack(expected))


def ablation_loop(model, x, acts, cls, value_of, sum_channels=True):
    """Desai and Ramaswamy's Ablation-CAM: one channel set to a value at a time.
    (B, 1, H, W), or (B, C, H, W) per channel without ``sum_channels``."""
    cams = []
    with torch.no_grad():
        y = model(x)[:, cls]
        for b in range(len(x)):
            weights = []
            for c in range(acts.shape[1]):

                def ablate(_, __, out, c=c, b=b):
                    out = out.clone()
                    out[:, c] = value_of(acts[b])
                    return out

                handle = model.layer.register_forward_hook(ablate)
                try:
                    y_c = model(x[b : b + 1])[0, cls]
                finally:
                    handle.remove()
                weights.append((y[b] - y_c) / y[b])
            w = torch.stack(weights)
            weighted = w.view(-1, 1, 1) * acts[b]
            cams.append(weighted.sum(0, keepdim=True) if sum_channels else weighted)
    return torch.stack(cams)


def test_ablation_cam_equals_the_loop(cam_at):
    model, x, acts = setup()
    assert_matches(
        cam_at(model, "layer", x, 1, method="ablationcam", batch_size=2),
        ablation_loop(model, x, acts, 1, lambda a: 0.0),
    )
    pytorch_grad_cam = ablation_loop(
        model, x, acts, 1, lambda a: 0.0 if a.min() == 0 else a.min() - 1e7
    )
    assert_matches(
        cam_at(model, "layer", x, 1, method="ablationcam", convention="pytorch-grad-cam"),
        pytorch_grad_cam,
    )


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_without_a_layer_the_last_feature_map_is_explained(method):
    model, x, acts = setup()
    with pytest.warns(
        gf.LayerChoiceWarning, match=r"^cam\(\.\.\., layer=None\): explaining 'layer'"
    ):
        ours = gf.cam(model, None, x, 1, method=method)
    if method == "scorecam":
        assert_matches(ours, score_cam_loop(model, x, acts, 1, "paper"))
    else:
        assert_matches(ours, ablation_loop(model, x, acts, 1, lambda a: 0.0))


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_per_example_targets_score_each_example_at_its_own_class(method):
    """target=[3, 0]: example 0's masked copies are scored at class 3, example 1's at
    class 0, also where one batch of copies holds both examples (batch_size=3), and one
    copy at a time (batch_size=1)."""
    model, x, acts = setup()
    if method == "scorecam":
        by_class = {c: score_cam_loop(model, x, acts, c, "paper") for c in (3, 0)}
    else:
        by_class = {c: ablation_loop(model, x, acts, c, lambda a: 0.0) for c in (3, 0)}
    expected = torch.stack([by_class[3][0], by_class[0][1]])
    assert not torch.allclose(by_class[3], by_class[0])  # the class matters here
    for batch_size in (1, 3):  # one copy per forward is allowed
        assert_matches(
            gf.cam(model, "layer", x, [3, 0], method=method, batch_size=batch_size), expected
        )


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
@pytest.mark.parametrize("sum_channels", [True, False])
def test_relu_and_sum_channels_of_gradient_free_methods_against_the_loops(
    method, sum_channels, cam_at
):
    model, x, acts = setup()
    if method == "scorecam":
        expected = score_cam_loop(model, x, acts, 3, "paper", sum_channels=sum_channels)
    else:
        expected = ablation_loop(model, x, acts, 3, lambda a: 0.0, sum_channels=sum_channels)
    assert (expected < 0).any() and (expected > 0).any(), "ReLU would change nothing"
    for relu in (False, True):
        ours = cam_at(model, "layer", x, 3, method=method, relu=relu, sum_channels=sum_channels)
        assert_matches(ours, expected.clamp_min(0) if relu else expected)


class Linear(nn.Module):
    """score = sum_c v_c mean(A_c) + bias: linear in the layer's channels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.layer = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.layer(x).mean((2, 3)))


def test_ablation_weights_in_closed_form_on_a_linear_head():
    """Setting channel c to 0 removes v_c mean(A_c) from the score: w_c = v_c m_c / y."""
    model = Linear().double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        acts = model.layer(x)
        y = model(x)[:, 2]
        contributions = model.head.weight[2] * acts.mean((2, 3))  # (B, C)
        expected = ((contributions / y[:, None]).view(2, 4, 1, 1) * acts).sum(1, keepdim=True)
    assert_matches(gf.cam(model, "layer", x, 2, method="ablationcam"), expected)


def test_eigen_cam_is_the_first_principal_component():
    model, x, acts = setup()
    expected = torch.from_numpy(first_component_by_hand(acts.numpy(), center=False))
    assert_matches(gf.cam(model, "layer", x, method="eigencam"), expected)
    centered = torch.from_numpy(first_component_by_hand(acts.numpy(), center=True))
    theirs = gf.cam(model, "layer", x, method="eigencam", convention="pytorch-grad-cam")
    for b in range(2):  # centered; the sign is the SVD's, so compare up to it
        sign = torch.sign((theirs[b] * centered[b]).sum())
        assert_matches(sign * theirs[b], centered[b])
    stacked = gf.cam(model, "layer", x, method="eigencam", targets=[0, 1, 2])
    assert stacked.shape == (3, 2, 1, 4, 4) and torch.equal(stacked[2], stacked[0])


class Counted(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_targets_share_the_forwards_and_equal_the_loop(method):
    model, x, _ = setup()
    model.head = Counted(model.head)
    targets = [0, [1, 2], lambda out: out[:, 3] - out[:, 0]]
    stacked = gf.cam(model, "layer", x, targets=targets, method=method, batch_size=5)
    calls_for_three = model.head.calls
    model.head.calls = 0
    loop = torch.stack([gf.cam(model, "layer", x, t, method=method, batch_size=5) for t in targets])
    assert_close(stacked, loop)
    assert calls_for_three * 3 == model.head.calls  # three targets, one set of forwards


@pytest.mark.parametrize("batch_size, batches", [(5, 1), (None, 1), (2, 3)])
def test_ablation_runs_the_trunk_once_per_batch_of_channels(batch_size, batches, cam_at):
    model, x, _ = setup()
    model.stem = Counted(model.stem)
    cam_at(model, "layer", x, 0, method="ablationcam", batch_size=batch_size)
    # one forward for the activation, one clean head pass, one vmapped call per batch
    # of the 5 channels
    assert model.stem.calls == 2 + batches


@pytest.mark.parametrize("batch_size, batches", [(10, 1), (None, 1), (3, 4)])
def test_score_cam_runs_one_forward_per_batch_of_masked_copies(batch_size, batches):
    """2 examples x 5 channels: 10 masked copies, one each (Score-CAM draws no
    samples), batch_size to a forward, after the forward for the maps (the paper's
    Score-CAM scores no clean input)."""
    model, x, _ = setup()
    model.stem = Counted(model.stem)
    gf.cam(model, "layer", x, 0, method="scorecam", batch_size=batch_size)
    assert model.stem.calls == 1 + batches


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (
            dict(method="scorecam", attribute_to_layer_input=True),
            r"method='scorecam', attribute_to_layer_input=True\): scorecam weighs the channels",
        ),
        (dict(method="ablationcam", batch_size=0), r"batch_size=0\): expected a positive int"),
        (
            dict(method="scorecam", batch_size="3"),
            r"^cam\(\.\.\., batch_size='3'\): expected a positive int \(perturbed copies per "
            r"forward\)\.$",
        ),
        (dict(method="scorecam", batch_size=True), r"batch_size=True\): expected a positive int"),
        (
            dict(method="scorecam", attribute_to_layer_input=True),
            r"^cam\(\.\.\., method='scorecam', attribute_to_layer_input=True\): scorecam weighs "
            r"the channels of the layer's output; explain the output of the layer that feeds "
            r"this one instead\.$",
        ),
        (
            dict(method="eigencam", sum_channels=False),
            r"component is one map, not one per channel\. Drop sum_channels\.",
        ),
        (
            dict(method="scorecam", autodiff="forward"),
            r"^cam\(\.\.\., method='scorecam', autodiff='forward'\): scorecam takes no "
            r"gradient; autodiff applies to the gradient methods",
        ),
        (
            dict(method="scorecam", convention="captum"),
            r"^cam\(\.\.\., method='scorecam', convention='captum'\): scorecam offers "
            r"the conventions 'paper', 'pytorch-grad-cam', 'torchcam'\.$",
        ),
        (
            dict(method="eigencam", convention="torchcam"),
            r"^cam\(\.\.\., method='eigencam', convention='torchcam'\): eigencam offers "
            r"the conventions 'paper', 'pytorch-grad-cam'\.$",
        ),
        (
            dict(method="eigengradcam", sum_channels=False),
            r"^cam\(\.\.\., method='eigengradcam', sum_channels=False\): the principal "
            r"component is one map, not one per channel\. Drop sum_channels\.$",
        ),
        (dict(method="sscam", samples=0), r"samples=0\): expected a positive int"),
        (dict(method="sscam", samples=True), r"samples=True\): expected a positive int"),
        (dict(method="iscam", samples=1.5), r"samples=1.5\): expected a positive int"),
    ],
)
def test_bad_arguments(kwargs, fragment, cam_at):
    model, x, _ = setup()
    with pytest.raises(gf.GradCamError, match=fragment):
        cam_at(model, "layer", x, 0, **kwargs)


def test_masking_needs_a_floating_input_of_the_maps_rank():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 3))
    ids = torch.randint(0, 10, (2, 5))
    with pytest.raises(gf.GradCamError, match=r"masking needs a floating-point input"):
        gf.cam(model, "0", ids, lambda out: out[:, :, 0].sum(1), method="scorecam", channel_axis=-1)
    images = torch.randint(0, 255, (2, 3, 8, 8))  # the maps' rank, but integers
    integer_model = nn.Sequential(Cast(), Net())
    with pytest.raises(
        gf.GradCamError,
        match=r"floating-point input .* got a Tensor of shape \(2, 3, 8, 8\) and dtype torch.int64",
    ):
        gf.cam(integer_model, "1.layer", images, 0, method="scorecam")


class Cast(nn.Module):
    def forward(self, x):
        return x.float() / 255


class TwoInputs(nn.Module):
    """Net's logits scaled by ``factor`` (an extra argument) plus a per-example shift,
    the second input (B, 4)."""

    def __init__(self, seed=0):
        super().__init__()
        self.net = Net(seed)

    def forward(self, x, shift, factor):
        return self.net(x) * factor + shift


class Bound(nn.Module):
    """TwoInputs for one example, its shift and factor fixed, taking the image alone."""

    def __init__(self, model, shift, factor):
        super().__init__()
        self.model, self.shift, self.factor = model, shift, factor
        self.layer = model.net.layer

    def forward(self, x):
        return self.model(x, self.shift.expand(len(x), -1), self.factor)


def two_inputs_loop(method, model, x, shift, factor):
    """The loops on TwoInputs ``model`` one example at a time, its shift and factor
    bound (the paper's conventions, class 1): (B, 1, 4, 4)."""
    expected = []
    for b in range(len(x)):
        bound = Bound(model, shift[b : b + 1], factor)
        with torch.no_grad():
            acts = bound.layer(torch.relu(model.net.stem(x[b : b + 1])))
        if method == "scorecam":
            expected.append(score_cam_loop(bound, x[b : b + 1], acts, 1, "paper"))
        else:
            expected.append(ablation_loop(bound, x[b : b + 1], acts, 1, lambda a: 0.0))
    expected = torch.cat(expected)
    assert_not_zero(expected)
    return expected


SHIFT = torch.tensor([[0.0, 3.0, -2.0, 1.0], [2.0, -1.0, 0.5, 0.0]], dtype=torch.float64)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_gradient_free_methods_take_tuple_inputs_extra_arguments_and_params(method, cam_at):
    """The first input is masked, the second passed per example, the extra argument
    as given, and params= replaces the module's parameters: against the loops on
    the model whose parameters they are, one example at a time."""
    model, other = TwoInputs(0).double().eval(), TwoInputs(1).double().eval()
    _, x, _ = setup()
    ours = cam_at(
        model,
        "net.layer",
        (x, SHIFT),
        1,
        method=method,
        additional_forward_args=(2.5,),
        params=dict(other.named_parameters()),
    )
    assert_matches(ours, two_inputs_loop(method, other, x, SHIFT, 2.5))


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_without_a_layer_the_probe_gets_tuple_inputs_and_extra_arguments(method):
    model, x = TwoInputs(0).double().eval(), setup()[1]
    with pytest.warns(gf.LayerChoiceWarning, match=r"explaining 'net\.layer'"):
        ours = gf.cam(model, None, (x, SHIFT), 1, method=method, additional_forward_args=2.5)
    assert_matches(ours, two_inputs_loop(method, model, x, SHIFT, 2.5))


def test_without_a_layer_a_bad_model_is_refused_by_name():
    with pytest.raises(gf.GradCamError, match=r"^cam\(model=\.\.\.\): expected an nn\.Module"):
        gf.cam("not a model", None, setup()[1], 0, method="scorecam")


def test_eigen_cam_honours_relu_and_the_convention_with_or_without_targets():
    model, x, acts = setup()
    theirs = svd_projection_by_hand(acts)
    assert (theirs < 0).any() and (theirs > 0).any()  # the ReLU changes it, not to 0
    for options in ({}, {"targets": [0, 3]}):
        for relu in (False, True):
            ours = gf.cam(
                model,
                "layer",
                x,
                method="eigencam",
                convention="pytorch-grad-cam",
                relu=relu,
                **options,
            )
            assert_matches(ours[1] if options else ours, theirs.clamp_min(0) if relu else theirs)


def test_eigen_cam_in_pytorch_grad_cams_convention_keeps_the_svds_sign():
    """pytorch-grad-cam projects on the SVD's first right singular vector as it comes;
    the paper's convention flips it to agree with the mean map. Here the SVD's sign
    disagrees for some example, so the two conventions must differ there. The reference
    takes torch's SVD, as the library does: NumPy's (first_component_by_hand) may pick
    the other sign."""
    model, x, acts = setup()
    expected = svd_projection_by_hand(acts)
    mean_maps = acts.mean(1).flatten(1)  # (B, positions)
    disagree = [float(expected[b].flatten() @ mean_maps[b]) < 0 for b in range(2)]
    assert any(disagree), "the inputs do not separate the conventions"
    assert_matches(
        gf.cam(model, "layer", x, method="eigencam", convention="pytorch-grad-cam"), expected
    )


def test_smoothed_score_cams_defaults_are_torchcams():
    """The docstring's defaults (torchcam's): SS-CAM 35 samples at noise 2.0, IS-CAM 10."""
    model, x, _ = setup()
    for method, spelled_out in (
        ("sscam", dict(samples=35, noise=2.0)),
        ("iscam", dict(samples=10)),
    ):
        default = gf.cam(
            model, "layer", x, 2, method=method, generator=torch.Generator().manual_seed(5)
        )
        explicit = gf.cam(
            model,
            "layer",
            x,
            2,
            method=method,
            generator=torch.Generator().manual_seed(5),
            **spelled_out,
        )
        other = gf.cam(
            model,
            "layer",
            x,
            2,
            method=method,
            samples=3,
            noise=0.5,
            generator=torch.Generator().manual_seed(5),
        )
        assert_not_zero(explicit)
        assert torch.equal(default, explicit)
        assert not torch.allclose(default, other)


class Branches(Net):
    """Net with a branch on the values, which the ablated forwards (under vmap) refuse."""

    def forward(self, x):
        maps = self.layer(torch.relu(self.stem(x)))
        if maps.sum() > 1e9:
            maps = maps / 2
        return self.head(torch.relu(maps).mean((2, 3)))


def test_a_model_that_fails_on_the_ablated_forwards_is_named():
    model, x = Branches().double().eval(), setup()[1]
    model(x)  # the clean forward runs
    with pytest.raises(
        gf.GradCamError,
        match=r"^cam\(model, \.\.\.\): the model raised RuntimeError .*data-dependent",
    ):
        gf.cam(model, "layer", x, 0, method="ablationcam")


class TwoAtATime(Net):
    """Net that refuses more than two images in a forward."""

    def forward(self, x):
        if len(x) > 2:
            raise ValueError(f"at most two images, got {len(x)}")
        return super().forward(x)


def test_a_model_that_fails_on_the_masked_forwards_is_named():
    model, x = TwoAtATime().double().eval(), setup()[1]
    model(x)  # the forward for the maps runs
    with pytest.raises(
        gf.GradCamError,
        match=r"^cam\(model, \.\.\.\): the model raised ValueError .*at most two images, got 4",
    ):
        gf.cam(model, "layer", x, 0, method="scorecam", batch_size=4)


class Twice(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        maps = self.conv(x)
        return maps, -maps


class TwiceNet(Net):
    """Net whose layer returns its maps and their negatives."""

    def __init__(self):
        super().__init__()
        self.twice = Twice(self.layer)

    def forward(self, x):
        maps, negated = self.twice(torch.relu(self.stem(x)))
        return self.head(torch.relu(maps - negated).mean((2, 3)))


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "eigencam"])
def test_a_gradient_free_method_needs_a_layer_of_one_tensor(method):
    model, x = TwiceNet().double().eval(), setup()[1]
    with pytest.raises(
        gf.GradCamError,
        match=rf"^cam\(\.\.\., layer=\.\.\., method='{method}'\): the layer's output holds 2 "
        rf"tensors; {method} needs one\.$",
    ):
        gf.cam(model, "twice", x, 0, method=method)


class Tagged(nn.Module):
    """A layer that returns its map beside a number the model goes on to use."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 5, 3, padding=1, stride=2)

    def forward(self, x):
        return self.conv(x), 0.5


class TaggedNet(Net):
    def __init__(self):
        super().__init__()
        self.tagged = Tagged()
        self.tagged.conv = self.layer

    def forward(self, x):
        h, scale = self.tagged(torch.relu(self.stem(x)))
        return self.head(torch.relu(h).mean((2, 3)) * (2 * scale))


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_a_layer_that_returns_a_number_beside_its_map(method):
    """The replaced output keeps the number (0.5, which the model doubles back to 1): the
    maps equal the plain model's, whose loops are checked above."""
    model, x, _ = setup()
    tagged = TaggedNet().double().eval()
    assert_matches(
        gf.cam(tagged, "tagged", x, 1, method=method, batch_size=4),
        gf.cam(model, "layer", x, 1, method=method, batch_size=4),
    )


class NoTensorOut(Net):
    """Returns how many examples it ran, beside no Tensor at all."""

    def forward(self, x):
        super().forward(x)
        return {"examples": len(x)}


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_an_index_target_on_an_output_without_tensors_shows_a_placeholder_path(method):
    """Gradient-free methods need no floating-point output to differentiate, so an output
    with no Tensor at all reaches the target check: the message lists no Tensors and
    shows the callable target with a placeholder path."""
    x = setup()[1]
    with pytest.raises(
        gf.GradCamError,
        match=r"^cam\(\.\.\., target=1\): an index target needs a model that returns a Tensor "
        r"of scores, but this model returns dict, whose Tensors are: none\. Pass a callable "
        r"target that picks the scores, e\.g\. target=lambda out: out\.logits\[:, k\], or wrap",
    ):
        gf.cam(NoTensorOut().double().eval(), "layer", x, 1, method=method)
