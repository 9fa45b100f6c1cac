import numpy as np
import pytest

from benchmarks.data.crop import FILL_HU, crop, crop_hu, region_bounds, window_hu


def sphere_volume(shape, spacing, centre_vox, diameter_mm, inside=100.0, outside=-900.0):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    d2 = sum((g - c * s) ** 2 for g, c, s in zip(grids, centre_vox, spacing))
    return np.where(d2 <= (diameter_mm / 2) ** 2, inside, outside).astype(np.float32)


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 2.5), (0.5, 0.9, 1.25)])
def test_sphere_is_centred_with_expected_extent(spacing):
    d = 12.0
    shape = (120, 100, 40)
    centre = (61.3, 47.8, 19.6)  # fractional voxel centre
    vol = sphere_volume(shape, spacing, centre, d)
    c = crop_hu(vol, spacing, centre, d)  # (slice, row, col)
    assert c.shape == (32, 32, 32) and c.dtype == np.float32
    inside = c > -400
    # Centred: the centre of mass of the sphere is the middle of the cube (15.5).
    com = np.array(np.nonzero(inside)).mean(axis=1)
    np.testing.assert_allclose(com, 15.5, atol=0.6)
    # Side of the cube = 2 d, so the sphere spans half of it: 16 of 32 samples
    # on each axis, within one sample or one source voxel, whichever is larger
    # (a 2.5 mm slice is 3.3 samples of a 24 mm cube).
    sample_mm = 2 * d / 32
    vol_axis = {0: 2, 1: 0, 2: 1}  # crop axis (slice, row, col) -> volume axis (i, j, k)
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        extent = inside.any(axis=other).sum()
        tol = max(1.0, spacing[vol_axis[ax]] / sample_mm)
        assert abs(extent - 16) <= tol, (ax, extent, tol)
    # Volume fraction of a ball in its bounding cube of side 2d: pi/6 / 8.
    assert abs(inside.mean() - np.pi / 48) < 0.012


def test_out_of_scan_samples_read_air_and_window():
    vol = np.zeros((10, 10, 10), np.float32)  # 0 HU everywhere inside
    c = crop_hu(vol, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), 5.0)
    # A cube centred on the corner voxel: the far octant is inside, the rest outside.
    assert c[-1, -1, -1] == pytest.approx(0.0) and c[0, 0, 0] == pytest.approx(FILL_HU)
    w = window_hu(np.array([-2000.0, -1000.0, -300.0, 400.0, 3000.0]))
    np.testing.assert_allclose(w, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert crop(vol, (1, 1, 1), (5, 5, 5), 2.0).max() <= 1.0


def test_region_covers_what_the_crop_reads():
    spacing, centre, d, shape = (0.7, 0.7, 2.5), (200.4, 300.2, 50.5), 9.0, (512, 512, 120)
    rs = region_bounds(centre, d, spacing, shape)
    rng = np.random.default_rng(0)
    vol = rng.normal(size=shape).astype(np.float32)
    sub = vol[rs]
    local = np.array(centre) - [s.start for s in rs]
    np.testing.assert_array_equal(crop_hu(vol, spacing, centre, d), crop_hu(sub, spacing, local, d))


def test_bad_diameter():
    with pytest.raises(ValueError):
        crop_hu(np.zeros((4, 4, 4)), (1, 1, 1), (2, 2, 2), 0.0)
