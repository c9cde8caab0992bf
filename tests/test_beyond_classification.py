"""Target builders on real detection, segmentation and embedding models, token grids
inferred, the default layer, and 1-D / 3-D / video models, against Captum or by hand."""

import pytest
import torch
import transformers as hf
from captum.attr import LayerGradCam
from torch import nn

import gradcam_func as gf
from conftest import assert_close, assert_matches, assert_not_zero
from gradcam_func import targets as gt
from hf_models import build


class Scored(nn.Module):
    """What Captum needs: the model with the target's score as its output."""

    def __init__(self, model, score, call=None):
        super().__init__()
        self.model, self.score, self.call = model, score, call

    def forward(self, *inputs):
        return self.score(self.model(*inputs) if self.call is None else self.call(*inputs))


def captum(model, layer, inputs, score):
    return LayerGradCam(Scored(model, score), model.get_submodule(layer)).attribute(inputs).detach()


def segformer():
    torch.manual_seed(0)
    model = hf.SegformerForSemanticSegmentation(
        hf.SegformerConfig(
            num_channels=3,
            num_encoder_blocks=2,
            depths=[1, 1],
            sr_ratios=[2, 1],
            hidden_sizes=[8, 16],
            patch_sizes=[3, 3],
            strides=[2, 2],
            num_attention_heads=[1, 2],
            mlp_ratios=[2, 2],
            decoder_hidden_size=16,
            num_labels=3,
        )
    ).eval()
    return model, torch.randn(2, 3, 32, 32)


def test_segmentation_target_equals_the_score_by_hand_and_captum():
    model, x = segformer()
    target = gt.segmentation(1)
    with torch.no_grad():
        logits = model(x).logits
    by_hand = (logits[:, 1] * (logits.argmax(1) == 1)).sum((1, 2))
    assert_close(target(model(x)), by_hand)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[2:5, 3:7] = True
    assert_close(
        gt.segmentation(2, mask, reduction="mean")(logits), logits[:, 2, 2:5, 3:7].mean((1, 2))
    )
    layer = "decode_head.linear_fuse"
    assert_matches(gf.grad_cam(model, layer, x, target), captum(model, layer, x, target))
    stacked = gf.grad_cam(model, layer, x, targets=[gt.segmentation(k) for k in range(3)])
    assert stacked.shape[0] == 3


def detr():
    torch.manual_seed(0)
    config = hf.DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=hf.ResNetConfig(
            num_channels=3,
            embedding_size=8,
            hidden_sizes=[8, 16],
            depths=[1, 1],
            layer_type="basic",
            out_features=["stage2"],
        ),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=5,
        num_labels=3,
    )
    return hf.DetrForObjectDetection(config).eval(), torch.randn(2, 3, 32, 32)


def xyxy(boxes):
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def test_detection_target_on_detr_equals_the_score_by_hand_and_captum():
    model, x = detr()
    with torch.no_grad():
        out = model(pixel_values=x)
    boxes = xyxy(out.pred_boxes)
    box = boxes[:, 2]  # each example's third query's box: an exact match (IoU 1)
    target = gt.detection(box, 1, box_terms=True)
    expected = out.logits.softmax(-1)[:, 2, 1] + 1.0
    assert_close(target(out), expected)
    far = torch.tensor([5.0, 5.0, 6.0, 6.0])  # overlaps no predicted box: scores 0
    assert torch.equal(gt.detection(far, 1)(out), torch.zeros(2))
    layer = "model.backbone.model.encoder.stages.1"
    call = lambda pixels: model(pixel_values=pixels)
    assert_matches(
        gf.grad_cam(call, model.get_submodule(layer), x, target),
        LayerGradCam(Scored(model, target, call), model.get_submodule(layer)).attribute(x).detach(),
    )


def test_detection_target_on_torchvision_style_outputs():
    out = [
        {
            "boxes": torch.tensor(
                [[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0]], requires_grad=True
            ),
            "labels": torch.tensor([1, 2]),
            "scores": torch.tensor([0.9, 0.7]),
        }
    ]
    assert_close(gt.detection([5.0, 5.0, 20.0, 20.0], 2)(out), torch.tensor([0.7]))
    assert_close(gt.detection([5.0, 5.0, 20.0, 20.0], 1)(out), torch.tensor([0.0]))
    with_box = gt.detection([0.0, 0.0, 10.0, 12.0], 1, box_terms=True)(out)
    assert_close(with_box, torch.tensor([0.9 + 100 / 120]))


def clip_image_model():
    torch.manual_seed(0)
    config = hf.CLIPConfig(
        text_config=dict(
            vocab_size=50,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
        ),
        vision_config=dict(
            image_size=16,
            patch_size=4,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        projection_dim=8,
    )
    clip = hf.CLIPModel(config).eval()
    with torch.no_grad():
        text = clip(
            input_ids=torch.randint(2, 50, (1, 5)), pixel_values=torch.randn(1, 3, 16, 16)
        ).text_embeds[0]
    return clip, text


class ImageEmbeddings(nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, pixels):
        vision = self.clip.vision_model(pixel_values=pixels).pooler_output
        return self.clip.visual_projection(vision)


def test_similarity_target_on_clip_equals_the_cosine_and_captum():
    clip, text = clip_image_model()
    model = ImageEmbeddings(clip).eval()
    x = torch.randn(2, 3, 16, 16)
    target = gt.similarity(text)
    with torch.no_grad():
        embeds = model(x)
    by_hand = (embeds @ text) / (embeds.norm(dim=1) * text.norm())
    assert_close(target(embeds), by_hand)
    layer = "clip.vision_model.encoder.layers.0.mlp.fc1"
    assert_matches(gf.grad_cam(model, layer, x, target), captum(model, layer, x, target))


def test_regression_contrast_and_finer():
    out = torch.tensor([[1.0, 4.0, 2.0, 3.5], [0.0, -1.0, 5.0, 4.5]])
    assert_close(gt.regression(2)(out), out[:, 2])
    assert_close(gt.regression(reduce=lambda y: y.norm(dim=1))(out), out.norm(dim=1))
    assert_close(gt.contrast(1, 3)(out), out[:, 1] - out[:, 3])
    # class 1's two nearest scores: example 0 {3.5, 2.0}; example 1 {0.0, 4.5}
    assert_close(gt.finer(1, similar=2)(out), torch.tensor([4.0 - 2.75, -1.0 - 2.25]))
    assert_close(gt.finer(1, similar=[0, 2])(out), out[:, 1] - out[:, [0, 2]].mean(1))
    with pytest.raises(gf.GradCamError, match=r"pass one of index= .* or reduce="):
        gt.regression()


def test_a_box_target_on_a_classifier_and_a_mask_target_on_logits_say_so():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(3)).eval()
    x = torch.randn(2, 3, 6, 6)
    net(x)
    with pytest.raises(
        gf.GradCamError,
        match=r"expected a detector's output.*A classifier's "
        r"output has no boxes",
    ):
        gf.grad_cam(net, "0", x, gt.detection([0, 0, 2, 2], 1))
    with pytest.raises(
        gf.GradCamError,
        match=r"expected segmentation logits \(B, classes, "
        r"\*S\), got shape \(2, 3\)",
    ):
        gf.grad_cam(net, "0", x, gt.segmentation(1))


@pytest.mark.parametrize(
    "name, layer, grid",
    [
        ("vit", "vit.layers.0", (4, 4, 1)),
        ("swin", "swin.encoder.layers.0.blocks.0.layernorm_after", (8, 8, 0)),
    ],
)
def test_token_grids_are_inferred(name, layer, grid):
    model, x = build(name)
    score = lambda out: out.logits[:, 1]
    explicit = gf.cam(
        model, layer, x, score, channel_axis=-1, token_grid=grid[:2], prefix_tokens=grid[2]
    )
    assert_close(gf.cam(model, layer, x, score, token_grid="auto"), explicit)


def test_an_ambiguous_or_impossible_grid_shows_the_explicit_call():
    with pytest.raises(
        gf.GradCamError,
        match=r"30 tokens for a 16 x 16 image fit no grid.*"
        r"Pass token_grid=\(h, w\) and prefix_tokens",
    ):
        gf._tokens.infer_token_grid(30, (16, 16))
    model, x = build("vit")
    with pytest.raises(
        gf.GradCamError,
        match=r"token_grid='auto'\): needs a token "
        r"activation \(B, T, D\)",
    ):
        gf.cam(
            model,
            "vit.embeddings.patch_embeddings.projection",
            x,
            lambda out: out.logits[:, 0],
            token_grid="auto",
        )


@pytest.mark.parametrize(
    "name, expected",
    [
        ("resnet", "resnet.encoder.stages.1"),
        ("convnext", "convnext.encoder.stages.1"),
        ("regnet", "regnet.encoder.stages.1"),
        ("vit", "vit.layers.1.layernorm_before"),
        ("swin", "swin.encoder.layers.1.blocks.0.layernorm_before"),
    ],
)
def test_the_default_layer_and_its_warning(name, expected):
    model, x = build(name)
    assert gf.default_layer(model, x)[0] == expected
    assert gf.default_layer(model, x[:1])[0] == expected  # a batch of one as well
    with pytest.warns(
        gf.LayerChoiceWarning,
        match=rf"^grad_cam\(\.\.\., layer=None\): explaining "
        rf"'{expected}'.*layer='{expected}'",
    ):
        cam = gf.grad_cam(model, None, x, lambda out: out.logits[:, 1])
    assert_close(cam, gf.grad_cam(model, expected, x, lambda out: out.logits[:, 1]))


class Signal1d(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv1d(2, 4, 5, padding=2), nn.Conv1d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean(-1))


class Volume3d(nn.Module):
    """A volume (B, 1, D, H, W) or a clip (B, 3, T, H, W) through 3-D convolutions."""

    def __init__(self, channels=1):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv3d(channels, 4, 3, padding=1)
        self.conv2 = nn.Conv3d(4, 4, 3, padding=1, stride=(1, 2, 2))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3, 4)))


@pytest.mark.parametrize(
    "make, shape",
    [(Signal1d, (2, 2, 16)), (Volume3d, (2, 1, 4, 8, 8)), (lambda: Volume3d(3), (2, 3, 4, 8, 8))],
    ids=["signal", "volume", "video"],
)
def test_1d_3d_and_video_models(make, shape):
    model = make().double().eval()
    x = torch.randn(*shape, dtype=torch.float64)
    expected = LayerGradCam(model, model.conv2).attribute(x, 1).detach()
    assert_matches(gf.grad_cam(model, "conv2", x, 1), expected)
    for method in ("gradcam++", "hirescam", "scorecam", "ablationcam", "eigencam"):
        maps = gf.cam(model, "conv2", x, 1, method=method)
        assert maps.shape == expected.shape, method
    up = gf.interpolate(expected, shape[2:], "linear")
    curves, auc = gf.metrics.deletion(model, x, expected, 1, steps=4)
    assert up.shape == (2, 1, *shape[2:]) and curves.shape == (2, 5)


def test_pictures_of_signals_volumes_and_videos(tmp_path):
    import matplotlib.image

    signal = torch.sin(torch.linspace(0, 6, 64))[None].repeat(2, 1)
    gf.viz.save_signal(signal, torch.rand(1, 16), tmp_path / "signal.png")
    gf.viz.save_volume(
        torch.rand(8, 16, 16), torch.rand(1, 4, 8, 8), tmp_path / "vol.png", slices=4
    )
    gf.viz.save_video(torch.rand(4, 3, 16, 16), torch.rand(1, 4, 8, 8), tmp_path / "v.png")
    gf.viz.save_video(torch.rand(3, 4, 16, 16), torch.rand(4, 8, 8), tmp_path / "v.gif")
    for name in ("signal.png", "vol.png", "v.png"):
        picture = matplotlib.image.imread(tmp_path / name)
        assert picture.ndim == 3 and picture[..., :3].std() > 0.02, name
    from PIL import Image

    assert Image.open(tmp_path / "v.gif").n_frames == 4


def test_deits_two_prefix_tokens_are_inferred():
    torch.manual_seed(0)
    deit = hf.DeiTForImageClassificationWithTeacher(
        hf.DeiTConfig(
            image_size=16,
            patch_size=4,
            num_channels=3,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=3,
        )
    ).eval()
    x = torch.randn(2, 3, 16, 16)
    score = lambda out: out.logits[:, 1]
    layer = "deit.layers.0"
    explicit = gf.cam(
        deit, layer, x, score, channel_axis=-1, token_grid=(4, 4), prefix_tokens=2
    )  # the class and the distillation token
    assert_not_zero(explicit)
    assert_close(gf.cam(deit, layer, x, score, token_grid="auto"), explicit)
