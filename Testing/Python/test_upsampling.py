"""The generator's upsampling option: the paper's transposed convolution prints a period-2 checkerboard (a spike at
the Nyquist frequency of its output), resize-convolution does not; both build from cards and count the same."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from SlicerEssNet.errors import ArchitectureMismatchError  # noqa: E402
from SlicerEssNet.networks import build_network, init_weights  # noqa: E402
from SlicerEssNet.networks.resnet_generator import upsample_block  # noqa: E402
from Training.study.synthesis_quality import nyquist_ratio  # noqa: E402


def smooth_positive_features(channels: int = 4, size: int = 16):
    """What an upsampling layer reads in a generator: smooth, non-negative (after ReLU) features with a mean."""
    generator = torch.Generator().manual_seed(0)
    field = torch.randn(1, channels, size, size, generator=generator)
    return torch.nn.functional.interpolate(field, scale_factor=2, mode="bilinear", align_corners=False).relu() + 0.5


@pytest.mark.parametrize("seed", range(5))
def test_transposed_convolution_prints_a_nyquist_spike_and_resize_convolution_does_not(seed):
    features = smooth_positive_features()
    ratios = {}
    for upsampling in ("transposed", "resize"):
        torch.manual_seed(seed)
        block = torch.nn.Sequential(*upsample_block(4, 1, upsampling))
        with torch.no_grad():
            ratios[upsampling] = nyquist_ratio(block(features)[0].numpy())
    # Odd and even output pixels of a stride-2 3x3 transposed conv sum different kernel taps: the input's mean
    # comes out as a +-pattern at the Nyquist frequency. Nearest x2 then 3x3 gives every pixel the same taps.
    assert ratios["transposed"] > 5.0, ratios
    assert ratios["resize"] < 1.0, ratios


def test_whole_generator_keeps_the_difference():
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    image = (torch.exp(-((ys - 30) ** 2 + (xs - 34) ** 2) / 300.0) * 1.6 - 0.8)[None, None]
    means = {}
    for upsampling in ("transposed", "resize"):
        ratios = []
        for seed in range(3):
            torch.manual_seed(seed)
            network = init_weights(build_network({"name": "resnet_generator", "ngf": 8, "n_blocks": 2,
                                                  "upsampling": upsampling}), "normal", 0.02).eval()
            with torch.no_grad():
                ratios.append(nyquist_ratio(network(image)[0].numpy()))
        means[upsampling] = sum(ratios) / len(ratios)
    assert means["transposed"] > 3 * means["resize"], means


def test_nyquist_ratio_sees_a_checkerboard_added_to_a_smooth_image():
    import numpy as np

    ys, xs = np.mgrid[0:64, 0:64]
    smooth = np.sin(xs / 9.0) + np.cos(ys / 7.0)
    checker = 0.05 * ((-1.0) ** (ys + xs))
    assert nyquist_ratio(smooth[None]) < 1.5
    assert nyquist_ratio((smooth + checker)[None]) > 10


def test_both_upsamplings_have_the_same_parameter_count_and_an_unknown_one_is_refused():
    counts = {}
    for upsampling in ("transposed", "resize"):
        network = build_network({"name": "resnet_generator", "ngf": 8, "n_blocks": 2, "upsampling": upsampling})
        counts[upsampling] = sum(p.numel() for p in network.parameters())
        assert network(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    assert counts["transposed"] == counts["resize"]
    with pytest.raises(ArchitectureMismatchError, match="upsampling must be one of transposed, resize"):
        build_network({"name": "resnet_generator", "ngf": 8, "upsampling": "bilinear"})


def test_the_card_records_the_upsampling_and_cards_without_it_mean_transposed():
    from Training.stages.essnet import generator_architecture
    from Training.study.presets import get_preset

    assert generator_architecture(get_preset("ship").synthesis)["upsampling"] == "resize"
    assert generator_architecture(get_preset("paper").synthesis)["upsampling"] == "transposed"
    old = build_network({"name": "resnet_generator", "ngf": 8, "n_blocks": 2})
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in old.modules())
