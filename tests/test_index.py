import numpy as np
import pandas as pd
import pytest

from benchmarks.data.index import build_index, load_index


@pytest.mark.parametrize("scan_ids", [[1, 2, 17, 250, 731, 1012]])
def test_committed_index_matches_fresh_clustering(scan_ids):
    fresh = build_index(scan_ids, workers=1, progress=False)
    table = load_index()
    committed = table[table["scan_id"].isin(scan_ids)].reset_index(drop=True)
    assert len(fresh) == len(committed) > 0
    assert list(fresh["nodule_id"]) == list(committed["nodule_id"])
    for col in committed.columns:
        a, b = fresh[col], committed[col]
        if pd.api.types.is_float_dtype(b):
            # The CSV stores 10 significant digits.
            np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-9, err_msg=col)
        else:
            assert [str(x) for x in a] == [str(x) for x in b], col


def test_index_columns_and_sanity():
    t = load_index()
    assert len(t) == 2651 and t["scan_id"].nunique() <= 1018
    assert t["nodule_id"].is_unique
    means = t["malignancy_readers"].map(lambda s: np.mean([int(x) for x in s.split(";")]))
    np.testing.assert_allclose(means, t["malignancy"], rtol=1e-6)
    assert (t["n_readers"] == t["annotation_ids"].str.count(";") + 1).all()
    assert t["eq_diameter_mm"].between(1, 80).all()
    assert t["calcification"].between(1, 6).all() and t["texture"].between(1, 5).all()
