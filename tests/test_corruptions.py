"""Corrupted test data: every corruption deterministic from its seed, stronger with severity, labels kept;
the published CIFAR-C files read in their layout."""

import numpy as np
import pytest
import torch

from ticketlab.data.corruptions import CORRUPTIONS, corrupt, corrupt_pixels, load_published
from ticketlab.errors import ConfigError, DataError

REQUIRED = {"gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "contrast", "brightness", "fog",
            "pixelate", "jpeg"}


@pytest.fixture(scope="module")
def images():
    """Structure at every scale, fading with frequency, as in natural images (blur, pixelation and JPEG need
    structure to act on)."""
    g = torch.Generator().manual_seed(0)
    x = sum(torch.nn.functional.interpolate(torch.rand(6, 3, n, n, generator=g), size=(32, 32), mode="bilinear",
                                            align_corners=False) / (i + 1) for i, n in enumerate((4, 8, 16, 32)))
    return (x - x.amin()) / (x.amax() - x.amin())


def test_every_required_corruption_is_there():
    assert REQUIRED <= set(CORRUPTIONS)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_each_corruption_is_seeded_stays_in_range_and_grows_with_severity(images, name):
    changes = []
    for severity in range(1, 6):
        a = corrupt_pixels(images, name, severity, seed=3)
        assert torch.equal(a, corrupt_pixels(images, name, severity, seed=3)), "not deterministic"
        assert a.shape == images.shape and a.min() >= 0 and a.max() <= 1
        changes.append(float((a - images).abs().mean()))
    assert all(later >= earlier for earlier, later in zip(changes, changes[1:])), changes
    assert changes[-1] > changes[0] > 0, changes
    if name in ("gaussian_noise", "shot_noise", "impulse_noise", "fog"):
        assert not torch.equal(corrupt_pixels(images, name, 3, seed=3), corrupt_pixels(images, name, 3, seed=4))


def test_corrupt_maps_normalised_inputs_and_refuses_bad_requests(images):
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    normalised = (images - m) / s
    out = corrupt(normalised, mean, std, "contrast", 5, seed=0)
    torch.testing.assert_close(out * s + m, corrupt_pixels(images, "contrast", 5, seed=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="unknown corruption 'snow'"):
        corrupt_pixels(images, "snow", 1, 0)
    with pytest.raises(ConfigError, match="severity must be 1..5"):
        corrupt_pixels(images, "fog", 6, 0)
    with pytest.raises(ConfigError, match="need image data"):
        corrupt_pixels(torch.rand(4, 10), "fog", 1, 0)


def test_the_published_npy_layout(tmp_path):
    n = 4
    x = np.stack([np.full((32, 32, 3), 10 * s + i, dtype=np.uint8) for s in range(5) for i in range(n)])
    np.save(tmp_path / "fog.npy", x)
    np.save(tmp_path / "labels.npy", np.tile(np.arange(n), 5))
    pixels, labels = load_published(tmp_path, "fog", 3)
    assert pixels.shape == (n, 3, 32, 32) and labels.tolist() == list(range(n))
    assert torch.allclose(pixels[:, 0, 0, 0] * 255, torch.tensor([20.0, 21, 22, 23]))
    with pytest.raises(DataError, match="missing"):
        load_published(tmp_path, "snow", 1)
    np.save(tmp_path / "bad.npy", x[:7])
    with pytest.raises(DataError, match="5 severities"):
        load_published(tmp_path, "bad", 1)
