"""Batched pad-crop-flip: exact crops and mirrors, fill value, determinism, flip rate, load_data wiring."""

import math

import pytest
import torch

from ticketlab.config import DataConfig
from ticketlab.data import DataBundle, PadCropFlip, load_data, make_augment, step_generator
from ticketlab.data.augment import default_pad


def crafted(b, c=2, h=9, w=7):
    """Every pixel distinct and positive, so a crop or mirror is identified uniquely."""
    return (torch.arange(c * h * w, dtype=torch.float32) + 1).view(1, c, h, w).repeat(b, 1, 1, 1)


def candidates(image, pad, fill, flip):
    """Every output the transform may produce for one image: (dy, dx, mirrored) -> tensor."""
    c, h, w = image.shape
    padded = torch.tensor(fill, dtype=image.dtype).view(-1, 1, 1).expand(c, h + 2 * pad, w + 2 * pad).clone()
    padded[:, pad:pad + h, pad:pad + w] = image
    out = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            out[(dy, dx, False)] = crop
            if flip:
                out[(dy, dx, True)] = crop.flip(-1)
    return out


def identify(out, image, pad, fill, flip):
    matches = [k for k, v in candidates(image, pad, fill, flip).items() if torch.equal(out, v)]
    assert len(matches) == 1, f"output matches {len(matches)} crops"
    return matches[0]


def test_flip_really_mirrors():
    x = crafted(64)
    out = PadCropFlip(pad=0, flip=True)(x, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(o, x[0].flip(-1)) for o in out]
    kept = [torch.equal(o, x[0]) for o in out]
    assert all(m != k for m, k in zip(mirrored, kept))  # every output is exactly one of the two
    assert 0 < sum(mirrored) < 64
    _, _, flips = PadCropFlip(pad=0, flip=True).draw(64, torch.Generator().manual_seed(0))
    assert flips.tolist() == mirrored  # the drawn flags are the ones applied


def test_crop_shifts_by_at_most_pad_and_pads_with_fill():
    pad, fill = 3, [-1.5, -2.25]
    x = crafted(120)
    out = PadCropFlip(pad=pad, flip=False, fill=fill)(x, torch.Generator().manual_seed(1))
    shifts = {identify(o, x[0], pad, fill, flip=False)[:2] for o in out}
    assert all(0 <= dy <= 2 * pad and 0 <= dx <= 2 * pad for dy, dx in shifts)
    assert len(shifts) > 20  # many different offsets, not one
    # the corner crop shows the fill in its first `pad` rows and columns, per channel
    corner = PadCropFlip(pad=pad, flip=False, fill=fill)
    gen = torch.Generator().manual_seed(1)
    dy, dx, _ = corner.draw(120, gen)
    i = int(((dy == 0) & (dx == 0)).nonzero()[0])
    assert (out[i, 0, :pad] == -1.5).all() and (out[i, 1, :, :pad] == -2.25).all()
    assert torch.equal(out[i, :, pad:, pad:], x[0, :, :-pad, :-pad])


def test_crop_and_flip_together_give_a_mirrored_crop():
    pad, fill = 2, [0.0, 0.0]
    x = crafted(80)
    out = PadCropFlip(pad=pad, flip=True)(x, torch.Generator().manual_seed(2))
    found = [identify(o, x[0], pad, fill, flip=True) for o in out]
    expected_dy, expected_dx, expected_flip = PadCropFlip(pad=pad).draw(80, torch.Generator().manual_seed(2))
    assert found == list(zip(expected_dy.tolist(), expected_dx.tolist(), expected_flip.tolist()))


def test_same_seed_and_step_is_deterministic_and_steps_differ():
    x = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    t = PadCropFlip(pad=4)
    a = t(x, step_generator(7, 100))
    assert torch.equal(a, t(x, step_generator(7, 100)))
    assert not torch.equal(a, t(x, step_generator(7, 101)))
    assert not torch.equal(a, t(x, step_generator(8, 100)))
    assert step_generator(0, 1).initial_seed() != step_generator(1, 0).initial_seed()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.uint8])
def test_shape_dtype_device_preserved(dtype):
    x = (torch.rand(5, 3, 10, 12) * 100).to(dtype)
    out = PadCropFlip(pad=2)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device and out.is_contiguous()
    assert out.data_ptr() != x.data_ptr()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x = torch.randn(64, 3, 32, 32)
    t = PadCropFlip(pad=4, fill=[-1.0, -2.0, -3.0])
    gpu = t(x.cuda(), step_generator(3, 9))
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), t(x, step_generator(3, 9)))


def test_about_half_flipped_and_offsets_uniform():
    n, pad = 20_000, 2
    t = PadCropFlip(pad=pad, flip=True)
    dy, dx, flips = t.draw(n, torch.Generator().manual_seed(5))
    assert abs(int(flips.sum()) - n / 2) <= 4 * math.sqrt(n / 4)
    p = 1 / (2 * pad + 1)
    for offsets in (dy, dx):
        counts = torch.bincount(offsets, minlength=2 * pad + 1)
        assert len(counts) == 2 * pad + 1
        assert all(abs(int(k) - n * p) <= 4 * math.sqrt(n * p * (1 - p)) for k in counts)
    # and the transform itself mirrors about half of a large batch
    x = crafted(4000, c=1, h=8, w=8)
    out = PadCropFlip(pad=0)(x, torch.Generator().manual_seed(6))
    mirrored = int((out == x[0].flip(-1)).flatten(1).all(1).sum())
    assert abs(mirrored - 2000) <= 4 * math.sqrt(1000)


def test_make_augment_only_for_images():
    assert make_augment((1, 40), (0.0,), (1.0,), seed=0) is None
    assert make_augment((3, 4, 4), (0.0,) * 3, (1.0,) * 3, seed=0) is None
    assert make_augment((3, 32, 32), (0.5,) * 3, (0.25,) * 3, seed=0) is not None
    assert [default_pad(s, s) for s in (8, 28, 32, 64)] == [1, 3, 4, 8]


def test_load_data_wires_augment_with_black_fill():
    cfg = DataConfig(dataset="digits", augment=True)
    b = load_data(cfg, noise_seed=0, augment_seed=3)
    assert load_data(DataConfig(dataset="digits"), noise_seed=0).augment is None
    assert load_data(DataConfig(dataset="mnist1d", augment=True), noise_seed=0).augment is None
    x = b.train.x[:256]
    a = b.augment(x, 10)
    assert torch.equal(a, b.augment(x, 10)) and not torch.equal(a, b.augment(x, 11))
    other = load_data(cfg, noise_seed=0, augment_seed=4)
    assert not torch.equal(a, other.augment(x, 10))
    # a raw black pixel (0) normalises to -mean/std: an all-black image stays exactly black
    black = b.train.x.min()
    blank = torch.full_like(x, float(black))
    assert torch.equal(b.augment(blank, 0), blank)
    # a white image gets black padding on the shifted side (pad 1 for 8x8 digits)
    white = torch.full_like(x, 7.0)
    out = b.augment(white, 0)
    assert set(torch.unique(out).tolist()) == {float(black), 7.0}
    assert ((out == black).flatten(1).sum(1) <= 15).all()  # at most one row plus one column of 8x8


def test_databundle_positional_construction_still_works():
    b = load_data(DataConfig(dataset="digits"), noise_seed=0)
    again = DataBundle(b.train, b.val, b.test, b.num_classes, b.input_shape, b.clean_train_y)
    assert again.augment is None
