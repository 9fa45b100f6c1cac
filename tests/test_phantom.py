import numpy as np
import pytest

from benchmarks.data.phantom import phantom_crop, phantom_crops, render_hu
from benchmarks.data.protocols import labelled_folds


@pytest.fixture(scope="module")
def rows():
    t = labelled_folds(2)
    # Nodules of each class, and one calcified, one part-solid.
    picks = [t[t["label"] == k].iloc[0] for k in range(3)]
    picks.append(t[t["calcification"] <= 3].iloc[0])
    picks.append(t[t["texture"].between(2.5, 3.5)].iloc[0])
    return [p.to_dict() for p in picks]


def test_deterministic_per_nodule(rows):
    a = phantom_crops(rows)
    b = [phantom_crop(r) for r in reversed(rows)][::-1]
    for x, y in zip(a, b):
        assert x.shape == (32, 32, 32) and x.dtype == np.float32
        np.testing.assert_array_equal(x, y)
    # Different nodules do not share their noise.
    assert not np.array_equal(a[0], a[1])


def test_malignancy_is_not_an_input(rows):
    for r in rows:
        flipped = dict(r, malignancy=6.0 - r["malignancy"], malignancy_readers="5;5;5;5", label=2 - r["label"])
        np.testing.assert_array_equal(phantom_crop(r), phantom_crop(flipped))


def test_attributes_shape_the_image(rows):
    r = rows[0]
    ground_glass = phantom_crop(dict(r, texture=1.0, calcification=6.0))
    solid = phantom_crop(dict(r, texture=5.0, calcification=6.0))
    calcified = phantom_crop(dict(r, texture=5.0, calcification=3.0))
    centre = (slice(12, 20),) * 3
    assert solid[centre].mean() > ground_glass[centre].mean() + 0.1
    assert calcified[centre].max() > 0.95 > solid[centre].max()


def test_values_in_window_and_nodule_brighter_than_background(rows):
    for v in phantom_crops(rows):
        assert 0.0 <= v.min() and v.max() <= 1.0
        assert v[12:20, 12:20, 12:20].mean() > v[:, :4, :4].mean()


def test_render_hu_ignores_extra_keys():
    mask = np.zeros((20, 20, 8), bool)
    mask[7:13, 7:13, 3:5] = True
    attrs = dict(subtlety=4, internalStructure=1, calcification=6, sphericity=4, margin=4, lobulation=2, spiculation=1, texture=5)
    a = render_hu(mask, (0.7, 0.7, 2.5), attrs, 3, 2.5)
    b = render_hu(mask, (0.7, 0.7, 2.5), dict(attrs, malignancy=5), 3, 2.5)
    np.testing.assert_array_equal(a, b)
    assert a[mask].mean() > a[~mask].mean() + 300
