"""Gradient methods: each against its paper's formula written out in NumPy, and properties
that tie them to Grad-CAM."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, strategies as st
from torch import nn

import gradcam_func as gf
from gradcam_func import methods
from conftest import assert_arrays_close, assert_close, assert_matches
from gradcam_func.testing.strategies import activations_and_gradients
from zoo import ZOO


def first_component_by_hand(values, center):
    """Per example: positions x features, SVD by NumPy, projection on the first right
    singular vector, signed to agree with the channels' mean map: (B, 1, *S)."""
    out = np.zeros((values.shape[0], 1) + values.shape[2:])
    for b in range(values.shape[0]):
        matrix = values[b].reshape(values.shape[1], -1).T
        mean_map = matrix.mean(axis=1)
        if center:
            matrix = matrix - matrix.mean(axis=0)
        _, _, vh = np.linalg.svd(matrix, full_matrices=False)
        projection = matrix @ vh[0]
        if projection @ mean_map < 0:
            projection = -projection
        out[b, 0] = projection.reshape(values.shape[2:])
    return out


def svd_projection_by_hand(values):
    """pytorch-grad-cam's Eigen-CAM: per example, centered positions x features projected
    on torch's first right singular vector as it comes (no sign fix): (B, 1, *S). torch's
    SVD, as the library's: NumPy's may pick the other sign."""
    batch, channels, *space = values.shape
    out = torch.zeros(batch, 1, *space, dtype=values.dtype)
    for b in range(batch):
        matrix = values[b].reshape(channels, -1).T
        centered = matrix - matrix.mean(0)
        vector = torch.linalg.svd(centered, full_matrices=False)[2][0]
        out[b, 0] = (centered @ vector).reshape(space)
    return out


def by_formula(method, acts, grads):
    """The methods with explicit loops over examples and channels: (B, 1, *S)."""
    if method == "eigengradcam":
        return first_component_by_hand(grads * acts, center=True)
    out = np.zeros((acts.shape[0], 1) + acts.shape[2:])
    for b in range(acts.shape[0]):
        for c in range(acts.shape[1]):
            a, g = acts[b, c], grads[b, c]
            if method == "gradcam++":
                num = g**2
                den = 2 * g**2 + a.sum() * g**3
                alpha = np.where(den != 0, num / np.where(den != 0, den, 1), 0)
                out[b, 0] += (alpha * np.maximum(g, 0)).sum() * a
            elif method == "xgradcam":
                out[b, 0] += (g * a).sum() / (a.sum() + 1e-7) * a
            elif method == "hirescam":
                out[b, 0] += g * a
            elif method == "layercam":
                out[b, 0] += np.maximum(g, 0) * a
            elif method == "gradcam_elementwise":
                out[b, 0] += np.maximum(g * a, 0)
    return out


GRADIENT = ["gradcam++", "xgradcam", "hirescam", "layercam", "gradcam_elementwise", "eigengradcam"]


@pytest.mark.parametrize("method", GRADIENT)
@given(pair=activations_and_gradients(min_spatial=1))
def test_each_method_matches_its_formula(method, pair):
    acts, grads = pair
    if method == "xgradcam":  # keep the denominator away from zero
        acts = np.abs(acts) + 0.1
    compute = methods.METHODS[method].compute
    expected = by_formula(method, acts, grads)
    # a repeated top singular value leaves the direction undefined
    assume(method != "eigengradcam" or _well_separated(grads * acts))
    assert_arrays_close(compute(acts, grads), expected)
    assert_arrays_close(compute(torch.from_numpy(acts), torch.from_numpy(grads)).numpy(), expected)


def _well_separated(values):
    """Whether every example's two largest singular values (centered) differ clearly,
    and its map is not orthogonal to its channel mean (where the sign is undefined)."""
    for b in range(values.shape[0]):
        matrix = values[b].reshape(values.shape[1], -1).T
        centered = matrix - matrix.mean(axis=0)
        u, s, vh = np.linalg.svd(centered, full_matrices=False)
        if len(s) > 1 and s[0] - s[1] < 1e-3 * max(s[0], 1e-12):
            return False
        if abs((centered @ vh[0]) @ matrix.mean(axis=1)) < 1e-6:
            return False
    return True


def test_eigencam_of_a_rank_one_activation_is_its_spatial_pattern():
    """A = u v^T: every channel is the same spatial pattern v, scaled by u_c. The first
    principal direction is u / |u|, the projection |u| v, signed like the channels'
    mean map (mean(u) v, here a positive multiple of v)."""
    u = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    v = torch.tensor([[1.0, 2.0], [0.5, -0.25]], dtype=torch.float64)
    acts = (u.view(3, 1, 1) * v)[None]  # (1, 3, 2, 2)
    cam = methods.eigencam_from(acts)
    assert_close(cam, (u.norm() * v)[None, None])
    assert_close(methods.eigencam_from(-acts), -cam)  # the rule, not the SVD, sets signs


@given(activations_and_gradients(min_spatial=1))
def test_hirescam_equals_gradcam_for_spatially_constant_gradients(pair):
    acts, grads = pair
    constant = np.broadcast_to(
        grads.mean(axis=tuple(range(2, grads.ndim)), keepdims=True), grads.shape
    )
    assert_arrays_close(methods.hirescam_from(acts, constant), gf.ops.grad_cam_from(acts, constant))


@given(activations_and_gradients(min_spatial=1))
def test_layercam_is_non_negative_for_non_negative_activations(pair):
    acts, grads = pair
    assert (methods.layercam_from(np.abs(acts), grads) >= 0).all()


@given(activations_and_gradients(min_spatial=1), st.floats(0.1, 3))
def test_gradcam_pp_is_a_positive_channel_rescaling_of_gradcam(pair, level):
    """Spatially constant positive gradients g: alpha = 1 / (2 + sum(A) g), so the
    Grad-CAM++ weight is n * g / (2 + sum(A) g) = Grad-CAM's g times n / (2 + sum(A) g)."""
    acts, grads = pair
    acts = np.abs(acts)
    spatial = tuple(range(2, acts.ndim))
    g = np.broadcast_to(np.abs(grads.mean(axis=spatial, keepdims=True)) + level, acts.shape)
    n = np.prod(acts.shape[2:])
    factor = n / (
        2 + acts.sum(axis=spatial, keepdims=True) * g[(...,) + (slice(0, 1),) * len(spatial)]
    )
    assert (factor > 0).all()
    assert_arrays_close(methods.gradcam_pp_weights(acts, g), factor * gf.ops.pool_gradients(g))


def test_gradcam_method_is_grad_cam():
    case = ZOO["residual"](torch.float64)
    assert_close(
        gf.cam(case.model, case.layer, case.inputs[0], targets=gf.top_k(2))[0],
        gf.grad_cam(case.model, case.layer, case.inputs[0], targets=gf.top_k(2))[0],
    )


def test_unknown_method():
    case = ZOO["plain_cnn"](torch.float64)
    with pytest.raises(
        gf.GradCamError,
        match=r"cam\(\.\.\., method='score-cam'\): expected "
        r"one of 'gradcam', 'gradcam\+\+'",
    ):
        gf.cam(case.model, case.layer, case.inputs[0], 1, method="score-cam")


def test_xgradcam_is_differentiable_after_a_relu():
    """XGradCAM assumes non-negative activations; there its gradient is well posed."""
    import functools

    from gradcam_func.testing import properties

    case = ZOO["plain_cnn"](torch.float64)
    explainer = functools.partial(gf.cam, method="xgradcam")
    properties.check_differentiable(explainer, case.model, "relu2", case.inputs[0], 1)


MAP_FUNCTIONS = [
    methods.gradcam_pp_from,
    methods.xgradcam_from,
    methods.hirescam_from,
    methods.layercam_from,
    methods.gradcam_elementwise_from,
]


@pytest.mark.parametrize("cam_from", MAP_FUNCTIONS, ids=lambda f: f.__name__)
@given(pair=activations_and_gradients())
def test_relu_and_sum_channels_are_honoured(cam_from, pair):
    """Properties every map function must have: the per-channel maps sum to the map,
    ``relu=True`` is max(map, 0), and the default is neither."""
    acts, grads = pair
    summed, per_channel = cam_from(acts, grads), cam_from(acts, grads, sum_channels=False)
    assert per_channel.shape == acts.shape
    assert summed.shape == (acts.shape[0], 1, *acts.shape[2:])
    assert_arrays_close(per_channel.sum(axis=1, keepdims=True), summed)
    assert_arrays_close(cam_from(acts, grads, relu=True), np.maximum(summed, 0))
    assert_arrays_close(
        cam_from(acts, grads, relu=True, sum_channels=False), np.maximum(per_channel, 0)
    )


class Scaled(nn.Module):
    """conv (the layer) -> tanh -> times an extra forward argument -> pool -> linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x, scale):
        return self.head((torch.tanh(self.conv(x)) * scale).mean((2, 3)))


@pytest.mark.parametrize("attribute_to_layer_input", [False, True])
def test_cam_hands_every_option_to_the_gradient_methods(attribute_to_layer_input):
    """cam() with a gradient method, params=, an extra forward argument, K targets in
    chunks of one, at the layer's output or input: LayerCAM (sum_c relu(g_c) A_c) by
    autograd on a copy of the model that holds those weights."""
    model = Scaled().double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    scale = torch.tensor(-1.5, dtype=torch.float64)
    params = {name: 2.0 * p.detach() - 0.2 for name, p in model.named_parameters()}
    copy = Scaled().double()
    copy.load_state_dict(params)
    leaf = (x if attribute_to_layer_input else copy.conv(x)).detach().requires_grad_()
    head = copy if attribute_to_layer_input else None
    output = (
        head(leaf, scale)
        if head is not None
        else copy.head((torch.tanh(leaf) * scale).mean((2, 3)))
    )
    expected = []
    for k in (2, 0):
        (grads,) = torch.autograd.grad(output[:, k].sum(), leaf, retain_graph=True)
        expected.append((grads.clamp_min(0) * leaf).sum(1, keepdim=True).detach())
    ours = gf.cam(
        model,
        "conv",
        x,
        method="layercam",
        targets=[2, 0],
        additional_forward_args=(scale,),
        params=params,
        chunk_size=1,
        attribute_to_layer_input=attribute_to_layer_input,
    )
    assert_matches(ours, torch.stack(expected))


def test_eigengradcam_through_cam_honours_relu_and_the_convention():
    model = Scaled().double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    scale = torch.tensor(0.7, dtype=torch.float64)
    leaf = model.conv(x).detach().requires_grad_()
    (grads,) = torch.autograd.grad(
        model.head((torch.tanh(leaf) * scale).mean((2, 3)))[:, 1].sum(), leaf
    )
    product = (grads * leaf).detach()
    paper = torch.from_numpy(first_component_by_hand(product.numpy(), center=True))
    theirs = svd_projection_by_hand(product)
    for reference in (paper, theirs):
        assert (reference < 0).any() and (reference > 0).any()  # the ReLU matters
    assert not torch.allclose(paper, theirs)  # the SVD's sign disagrees with the mean map
    for relu in (False, True):
        for convention, reference in (("paper", paper), ("pytorch-grad-cam", theirs)):
            ours = gf.cam(
                model,
                "conv",
                x,
                1,
                method="eigengradcam",
                additional_forward_args=(scale,),
                relu=relu,
                convention=convention,
            )
            assert_matches(ours, reference.clamp_min(0) if relu else reference)


@pytest.mark.parametrize(
    "method, convention, offered",
    [
        ("gradcam", "pytorch-grad-cam", "'paper'"),
        ("layercam", "torchcam", "'paper'"),
        ("eigencam", "torchcam", "'paper', 'pytorch-grad-cam'"),
        ("eigengradcam", "captum", "'paper', 'pytorch-grad-cam'"),
    ],
)
def test_conventions_a_method_does_not_offer_are_refused(method, convention, offered):
    model = Scaled().double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    with pytest.raises(
        gf.GradCamError,
        match=rf"^cam\(\.\.\., method='{method}', convention='{convention}'\): {method} offers "
        rf"the conventions {offered}\.$",
    ):
        gf.cam(
            model,
            "conv",
            x,
            1,
            method=method,
            convention=convention,
            additional_forward_args=(1.0,),
        )
