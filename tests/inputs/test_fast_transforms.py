import cv2
import numpy as np
import pytest

from melanoma.inputs.fast_transforms import PROBABILITIES, FastTrainTransform
from melanoma.inputs.recipe_ops import AffineElastic

OFF = dict.fromkeys(PROBABILITIES, 0.0)


def _image(h=48, w=48, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)  # some structure, no symmetry


def test_output_shape_dtype_and_range():
    t = FastTrainTransform(32)
    t.set_random_seed(0)
    for seed in range(30):
        out = t(image=_image(48, 64, seed))["image"]
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8
        assert out.max() > 0  # not a blank image
    plain = FastTrainTransform(32, OFF)(image=_image())["image"]  # nothing applied: a plain resize
    assert (
        np.abs(plain.astype(int) - cv2.resize(_image(), (32, 32), interpolation=cv2.INTER_LINEAR)).max() <= 1
    )


@pytest.mark.parametrize(
    "op, expected",
    [
        ("transpose", lambda x: x.transpose(1, 0, 2)),
        ("vflip", lambda x: x[::-1]),
        ("hflip", lambda x: x[:, ::-1]),
    ],
)
def test_flips_and_transposes_are_exact(op, expected):
    image = _image()
    plain = FastTrainTransform(32, OFF)(image=image)["image"]
    got = FastTrainTransform(32, {**OFF, op: 1.0})(image=image)["image"]
    assert np.array_equal(got, expected(plain))


def test_each_operation_fires_with_its_probability():
    t = FastTrainTransform(16)
    t.set_random_seed(7)
    n = 3000
    counts = {k: 0 for k in PROBABILITIES}
    members = {"blur": np.zeros(4), "distortion": np.zeros(3)}
    image = _image(24, 24)
    for _ in range(n):
        t(image=image)
        for k in PROBABILITIES:
            value = t.last[k]
            fired = value is not None if k in members else bool(value)
            counts[k] += fired
            if k in members and value is not None:
                members[k][value] += 1
    for k, p in PROBABILITIES.items():
        sd = np.sqrt(p * (1 - p) / n)
        assert abs(counts[k] / n - p) < 4 * sd, (k, counts[k] / n, p)
    for k, m in members.items():  # OneOf: each member equally likely
        share = m / m.sum()
        assert np.abs(share - 1 / len(m)).max() < 0.04, (k, share)


def test_seeded_draws_repeat():
    a, b = FastTrainTransform(32), FastTrainTransform(32)
    a.set_random_seed(3)
    b.set_random_seed(3)
    for seed in range(10):
        assert np.array_equal(a(image=_image(seed=seed))["image"], b(image=_image(seed=seed))["image"])
    b.set_random_seed(4)
    assert not all(np.array_equal(a(image=_image())["image"], b(image=_image())["image"]) for _ in range(3))


def test_the_affine_border_stays_black_after_colour_changes():
    geometry = FastTrainTransform(32, {**OFF, "affine": 1.0})
    coloured = FastTrainTransform(32, {**OFF, "affine": 1.0, "brightness": 1.0, "contrast": 1.0, "hsv": 1.0})
    geometry.set_random_seed(1)
    coloured.set_random_seed(1)  # the same Affine draws
    image = np.full((48, 48, 3), 90, np.uint8)
    seen = 0
    for _ in range(20):
        border = geometry(image=image)["image"].max(axis=2) == 0
        out = coloured(image=image)["image"]
        seen += border.sum()
        assert out[border].max(initial=0) == 0  # black, not brightened or tinted
    assert seen > 0


def test_coarse_elastic_field_has_the_full_resolution_distribution():
    # The recipe's elastic field at full size against ours on a 4x coarser grid: same spread of
    # displacements (a larger alpha and smaller sigma than the recipe's make it measurable; no affine).
    size, alpha, sigma = 128, 400.0, 12.0
    full = AffineElastic(alpha=alpha, sigma=sigma, alpha_affine=0, p=1)
    full.set_random_seed(0)
    ref = [full.field(size, size)[0] for _ in range(40)]
    ours = FastTrainTransform(32)
    ours.elastic = AffineElastic(alpha=alpha, sigma=sigma, alpha_affine=0, p=1)
    ours.elastic.set_random_seed(0)
    xs = np.tile(np.arange(size, dtype=np.float32), (size, 1))
    ys = xs.T.copy()
    got = []
    for _ in range(40):
        mx, _ = ours._distortion_map(2, size, size, xs, ys)
        inner = slice(8, -8)  # away from the reflected edges
        got.append((mx - xs)[inner, inner])
    ref_sd, our_sd = np.std(ref), np.std(got)
    assert ref_sd > 0.5  # a real displacement to compare
    assert our_sd == pytest.approx(ref_sd, rel=0.25)
