"""The four networks: reference parameter counts, real forward passes, shape rules, the factory and initialisation."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from SlicerEssNet.errors import ArchitectureMismatchError, InputImageError, WeightsError
from SlicerEssNet.networks import build_network, init_weights, required_multiple
from SlicerEssNet.networks.patchgan import PatchDiscriminator
from SlicerEssNet.networks.resnet_generator import ResnetGenerator
from SlicerEssNet.networks.resnet_segmenter import ResnetSegmenter
from SlicerEssNet.networks.unet import UNet

from weights_testing import one_line

CORE = Path(__file__).resolve().parents[2] / "SlicerEssNet"
MY_FILES = [CORE / "networks" / name for name in
            ("__init__.py", "input_shape.py", "resnet_generator.py", "patchgan.py", "resnet_segmenter.py", "unet.py")
            ] + [CORE / "model_card.py", CORE / "weights.py", CORE / "model_store.py"]


def count(network) -> int:
    return sum(parameter.numel() for parameter in network.parameters())


def build_on_meta(architecture):
    """Counting parameters needs no memory: the meta device holds shapes only."""
    with torch.device("meta"):
        return build_network(architecture)


def seeded(architecture, seed=0):
    torch.manual_seed(seed)
    return init_weights(build_network(architecture), "normal", 0.02)



# --- the reference counts (ARCHITECTURE.md; junyanz's networks; milesial's U-Net) --------------------
@pytest.mark.parametrize("architecture, expected", [
    ({"name": "resnet_generator"}, 11_365_633),
    ({"name": "resnet_generator", "in_channels": 1, "out_channels": 1, "ngf": 64, "n_blocks": 9}, 11_365_633),
    ({"name": "patchgan", "in_channels": 1, "ndf": 64, "n_layers": 3}, 2_762_689),
    ({"name": "unet", "in_channels": 1, "num_classes": 1, "base": 64}, 31_036_481),
    # the ResNet-9 body with a 2-class head: the generator's count plus the head's extra output channel
    ({"name": "resnet_segmenter", "in_channels": 1, "num_classes": 2}, 11_365_633 + 64 * 7 * 7 + 1),
])
def test_parameter_counts_match_the_references(architecture, expected):
    assert count(build_on_meta(architecture)) == expected


def test_three_channel_counts_match_junyanz():
    # the 3-channel figures of the CycleGAN code are an independent check of the layer recipe
    assert count(build_on_meta({"name": "resnet_generator", "in_channels": 3, "out_channels": 3})) == 11_378_179
    assert count(build_on_meta({"name": "patchgan", "in_channels": 3})) == 2_764_737


def test_generator_layers_follow_the_recipe():
    generator = ResnetGenerator(ngf=8, n_blocks=9)
    layers = list(generator.model)
    assert isinstance(layers[0], nn.ReflectionPad2d) and layers[0].padding == (3, 3, 3, 3)
    assert layers[1].kernel_size == (7, 7) and layers[1].bias is not None
    norms = [m for m in generator.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(not m.affine for m in norms)
    assert sum(isinstance(m, nn.Dropout) for m in generator.modules()) == 0
    strided = [m for m in generator.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 2
    transposed = [m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.kernel_size, m.stride, m.padding, m.output_padding) for m in transposed] == \
        [((3, 3), (2, 2), (1, 1), (1, 1))] * 2
    assert sum(type(m).__name__ == "ResnetBlock" for m in generator.modules()) == 9
    assert isinstance(layers[-1], nn.Tanh)


# --- real forward passes ----------------------------------------------------------------------------
def test_generator_forward_is_bounded_and_sized_like_its_input():
    generator = seeded({"name": "resnet_generator", "ngf": 8, "n_blocks": 3})
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        y = generator(x)
    assert y.shape == (2, 1, 64, 64)
    assert float(y.abs().max()) <= 1.0 and float(y.std()) > 0


@pytest.mark.parametrize("height, width", [(36, 44), (20, 100), (8, 12)])
def test_generator_and_segmenter_take_any_multiple_of_four(height, width):
    for network in (ResnetGenerator(ngf=4, n_blocks=1), ResnetSegmenter(num_classes=3, ngf=4, n_blocks=1)):
        with torch.no_grad():
            y = network(torch.randn(1, 1, height, width))
        assert y.shape[-2:] == (height, width)


@pytest.mark.parametrize("network, size", [(ResnetGenerator(ngf=4, n_blocks=1), 30),
                                           (UNet(base=4), 40), (UNet(base=4), 8)])
def test_sizes_the_strides_cannot_return_are_refused(network, size):
    with pytest.raises(InputImageError) as error:
        network(torch.randn(1, 1, size, size))
    assert one_line(error) and f"{size}x{size}" in str(error.value)


def test_segmenter_returns_unbounded_logits_and_reuses_the_generator():
    segmenter = ResnetSegmenter(num_classes=2, ngf=4, n_blocks=1)
    assert isinstance(segmenter, ResnetGenerator)
    assert not any(isinstance(m, nn.Tanh) for m in segmenter.modules())
    generator = ResnetGenerator(out_channels=2, ngf=4, n_blocks=1)
    assert {k: v.shape for k, v in segmenter.state_dict().items()} == \
        {k: v.shape for k, v in generator.state_dict().items()}
    with torch.no_grad():
        segmenter.model[-1].bias.fill_(5.0)  # a confident head must be able to say so
        logits = segmenter(torch.randn(1, 1, 16, 16))
    assert logits.shape == (1, 2, 16, 16) and float(logits.min()) > 1.0


def test_patchgan_scores_30x30_patches_of_a_256_image_with_a_70_pixel_field():
    discriminator = seeded({"name": "patchgan", "ndf": 8})
    with torch.no_grad():
        assert discriminator(torch.randn(1, 1, 256, 256)).shape == (1, 1, 30, 30)
    # receptive field: without the (global) instance norms one output pixel sees exactly a 70x70 window
    local = PatchDiscriminator(ndf=4)
    for index, layer in enumerate(local.model):
        if isinstance(layer, nn.InstanceNorm2d):
            local.model[index] = nn.Identity()
    for parameter in local.parameters():
        nn.init.constant_(parameter, 0.05)
    x = torch.randn(1, 1, 128, 128, requires_grad=True)
    local(x)[0, 0, 6, 6].backward()
    rows, cols = np.nonzero(x.grad[0, 0].numpy())
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70
    assert not any(isinstance(m, nn.Sigmoid) for m in discriminator.modules())


def test_unet_forward_in_training_and_eval_mode():
    unet = seeded({"name": "unet", "num_classes": 3, "base": 8})
    x = torch.randn(2, 1, 64, 48)
    unet.train()
    y = unet(x)
    assert y.shape == (2, 3, 64, 48)
    y.mean().backward()
    assert all(p.grad is not None for p in unet.parameters())
    unet.eval()
    with torch.no_grad():
        assert unet(x).shape == (2, 3, 64, 48)
    batch_norms = [m for m in unet.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(batch_norms) == 18 and int(batch_norms[0].num_batches_tracked) == 1
    convs = [m for m in unet.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert all(m.bias is None for m in convs)


def test_unet_skips_carry_detail_the_bottleneck_cannot():
    # a one-pixel impulse moved by one pixel must move the output: only the full-resolution skip can tell
    unet = seeded({"name": "unet", "base": 4}).eval()
    a, b = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    a[0, 0, 10, 10] = b[0, 0, 10, 11] = 1.0
    with torch.no_grad():
        assert not torch.allclose(unet(a), unet(b))


@pytest.mark.data
def test_generator_on_a_real_ct_slice(shared_data):
    nibabel = pytest.importorskip("nibabel")
    image = nibabel.load(str(shared_data / "totalseg_examples" / "example_ct_sm.nii.gz"))
    ct = np.asarray(image.dataobj, dtype=np.float32)[:, :, image.shape[2] // 2]
    window = np.clip((ct + 125.0) / 200.0 - 1.0, -1.0, 1.0)  # -125..275 HU -> [-1, 1]
    height, width = (s - s % 4 for s in window.shape)
    x = torch.from_numpy(np.ascontiguousarray(window[:height, :width]))[None, None]
    generator = seeded({"name": "resnet_generator", "ngf": 8, "n_blocks": 2}).eval()
    with torch.no_grad():
        y = generator(x)
        expected = cyclegan_resnet_generator(x, generator.state_dict(), n_blocks=2)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert float(x.std()) > 0.1  # the slice really has anatomy in the window
    assert float(expected.std()) > 0.01  # and the network's output varies with it
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-5)


def cyclegan_resnet_generator(x, state, n_blocks):
    """junyanz's ``ResnetGenerator`` (instance norm, reflection padding, transposed convolutions) written out with
    ``torch.nn.functional`` from a state dict alone: an independent account of what the generator computes."""
    import torch.nn.functional as F

    def conv(h, key, stride=1, padding=0):
        return F.conv2d(h, state[f"{key}.weight"], state[f"{key}.bias"], stride=stride, padding=padding)

    def norm(h, relu=True):
        h = F.instance_norm(h, eps=1e-5)
        return F.relu(h) if relu else h

    h = norm(conv(F.pad(x, (3, 3, 3, 3), mode="reflect"), "model.1"))  # c7s1-ngf
    h = norm(conv(h, "model.4", stride=2, padding=1))  # d2ngf
    h = norm(conv(h, "model.7", stride=2, padding=1))  # d4ngf
    for block in range(n_blocks):  # R4ngf: x + IN(conv(pad(ReLU(IN(conv(pad(x)))))))
        key = f"model.{10 + block}.block"
        r = norm(conv(F.pad(h, (1, 1, 1, 1), mode="reflect"), f"{key}.1"))
        h = h + norm(conv(F.pad(r, (1, 1, 1, 1), mode="reflect"), f"{key}.5"), relu=False)
    index = 10 + n_blocks
    for _ in range(2):  # u2ngf, ungf: stride-2 3x3 transposed convolutions
        h = norm(F.conv_transpose2d(h, state[f"model.{index}.weight"], state[f"model.{index}.bias"], stride=2,
                                    padding=1, output_padding=1))
        index += 3
    return torch.tanh(conv(F.pad(h, (3, 3, 3, 3), mode="reflect"), f"model.{index + 1}"))  # c7s1-out, tanh


# --- the factory ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, cls", [("resnet_generator", ResnetGenerator), ("patchgan", PatchDiscriminator),
                                       ("resnet_segmenter", ResnetSegmenter), ("unet", UNet)])
def test_build_network_by_name(name, cls):
    assert type(build_on_meta({"name": name})) is cls


@pytest.mark.parametrize("architecture, words", [
    ({"name": "vnet"}, "unknown network 'vnet'"),
    ({"name": "unet", "base_width": 32}, "no parameter 'base_width'"),
    ({"name": "unet", "base": 0}, "positive integer"),
    ({"name": "unet", "base": "64"}, "positive integer"),
    ({"name": "resnet_generator", "n_blocks": True}, "positive integer"),
    ({"name": "patchgan", "ndf": 32.5}, "positive integer"),
    ({"name": "resnet_generator", "final": "sigmoid"}, "final"),
    ({"ngf": 64}, "'name'"),
    ("unet", "'name'"),
])
def test_build_network_refuses_what_it_cannot_build(architecture, words):
    with pytest.raises(ArchitectureMismatchError) as error:
        build_network(architecture)
    assert one_line(error) and words in str(error.value)


def test_required_multiples():
    assert required_multiple({"name": "resnet_generator"}) == 4
    assert required_multiple({"name": "resnet_segmenter"}) == 4
    assert required_multiple({"name": "unet"}) == 16
    assert required_multiple({"name": "patchgan"}) == 1


# --- initialisation ---------------------------------------------------------------------------------
def test_init_weights_normal_follows_cyclegan():
    torch.manual_seed(1)
    unet = init_weights(UNet(base=16), "normal", gain=0.02).requires_grad_(False)
    weights = torch.cat([m.weight.flatten() for m in unet.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(float(weights.mean())) < 1e-3 and abs(float(weights.std()) - 0.02) < 1e-3
    biases = [m.bias for m in unet.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None]
    assert biases and all(float(b.abs().max()) == 0.0 for b in biases)
    scales = torch.cat([m.weight for m in unet.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(float(scales.mean()) - 1.0) < 0.01 and 0.01 < float(scales.std()) < 0.03


@pytest.mark.parametrize("init_type", ["xavier", "kaiming", "orthogonal"])
def test_other_initialisations_change_the_weights(init_type):
    torch.manual_seed(0)
    generator = ResnetGenerator(ngf=4, n_blocks=1)
    before = generator.model[1].weight.clone()
    assert init_weights(generator, init_type, gain=0.02) is generator
    assert not torch.equal(before, generator.model[1].weight)


def test_init_weights_is_reproducible_and_refuses_unknown_types():
    assert torch.equal(seeded({"name": "patchgan", "ndf": 4}, 3).model[0].weight,
                       seeded({"name": "patchgan", "ndf": 4}, 3).model[0].weight)
    with pytest.raises(WeightsError) as error:
        init_weights(UNet(base=4), "uniform")
    assert one_line(error) and "normal" in str(error.value)


# --- what Slicer needs of these files ---------------------------------------------------------------
def test_my_files_keep_the_slicer_python_rules():
    for path in MY_FILES:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, feature_version=(3, 9))
        first = tree.body[1] if isinstance(tree.body[0], ast.Expr) else tree.body[0]
        assert isinstance(first, ast.ImportFrom) and first.module == "__future__", path
        for node in ast.walk(tree):
            assert type(node).__name__ != "Match", path
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "zip":
                assert not any(k.arg == "strict" for k in node.keywords), path
            if isinstance(node, ast.ImportFrom) or isinstance(node, ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n.split(".")[0] in ("slicer", "qt", "ctk", "vtk") for n in names), path


def test_importing_the_model_modules_does_not_import_torch():
    code = ("import sys; import SlicerEssNet.networks, SlicerEssNet.model_card, SlicerEssNet.weights, "
            "SlicerEssNet.model_store; print('torch' in sys.modules, 'safetensors' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=str(CORE.parent), capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["False", "False"]
