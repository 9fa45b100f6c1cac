import numpy as np
import pytest

from benchmarks.data.index import load_index
from benchmarks.data.protocols import CLASS_NAMES, N_FOLDS, PROTOCOLS, class_of, compute_folds, fold_table, labelled_folds, protocol_hash


@pytest.fixture(scope="module")
def table():
    return labelled_folds(2)


def test_label_rule_boundaries():
    # benign < 2.5 <= unsure <= 3.5 < malignant
    assert list(class_of([1.0, 2.49, 2.5, 3.0, 3.5, 3.51, 5.0])) == [0, 0, 1, 1, 1, 2, 2]


def test_every_nodule_in_one_fold_and_patients_never_split(table):
    assert set(table["fold"]) == set(range(N_FOLDS))
    folds_per_patient = table.groupby("patient_id")["fold"].nunique()
    assert (folds_per_patient == 1).all()
    assert table["nodule_id"].is_unique


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_train_test_disjoint_and_stratified(table, protocol):
    p = PROTOCOLS[protocol]
    test_labels = [CLASS_NAMES.index(c) for c in p.test_classes]
    whole = table[table["label"].isin(test_labels)]["label"].value_counts(normalize=True)
    seen_test = []
    for k in range(N_FOLDS):
        ft = fold_table(protocol, k, table=table)
        assert not set(ft.train["patient_id"]) & set(ft.test["patient_id"])
        assert not set(ft.train["nodule_id"]) & set(ft.test["nodule_id"])
        assert set(ft.test["label"]) <= set(test_labels)
        assert set(ft.train["label"]) == {CLASS_NAMES.index(c) for c in p.train_classes}
        prop = ft.test["label"].value_counts(normalize=True)
        for lab in test_labels:
            assert abs(prop.get(lab, 0.0) - whole[lab]) < 0.03, (protocol, k, lab)
        seen_test.extend(ft.test["nodule_id"])
    # The test folds of a protocol cover every eligible nodule of its test classes once.
    assert sorted(seen_test) == sorted(table[table["label"].isin(test_labels)]["nodule_id"])


def test_one_assignment_serves_all_protocols(table):
    for k in range(N_FOLDS):
        a = fold_table("LIDC-A", k, table=table).test
        c = fold_table("LIDC-C", k, table=table).test
        assert set(c["nodule_id"]) == set(a[a["label"] != 1]["nodule_id"])


def test_committed_folds_are_the_rule_on_this_index():
    # Recomputing with the same seed reproduces the committed file; if a future
    # scikit-learn changes its shuffling this fails loudly instead of moving folds.
    recomputed = compute_folds(load_index(), 2).set_index("nodule_id")["fold"]
    committed = labelled_folds(2).set_index("nodule_id")["fold"]
    assert (recomputed.loc[committed.index] == committed).all()


def test_protocol_hash_depends_on_rule():
    assert protocol_hash(2) != protocol_hash(3)
    assert protocol_hash(2) == protocol_hash(2)
    assert len(protocol_hash(2)) == 64


def test_min_readers_counts_match_environment_notes():
    # Counts measured when the index was built (README, "Nodules, labels, protocols").
    for r, n in [(1, 2651), (2, 1880), (3, 1392), (4, 911)]:
        t = labelled_folds(r)
        assert len(t) == n
    t = labelled_folds(2)
    assert np.bincount(t["label"]).tolist() == [514, 1034, 332]


# ---------------------------------------------------------------- repeated partitions (benchmarks.data.partitions)
from benchmarks.data.partitions import MAX_REPEATS, REPEATS_SHA256, compute_repeats, make_partition, repeats_path  # noqa: E402
from benchmarks.data.protocols import MIN_READERS_CHOICES, eligible  # noqa: E402
from benchmarks.io import sha256_file  # noqa: E402


@pytest.mark.parametrize("min_readers", MIN_READERS_CHOICES)
def test_repeats_regenerate_to_the_same_bytes_and_pinned_hash(min_readers):
    text = compute_repeats(eligible(load_index(), min_readers), min_readers).to_csv(index=False)
    assert text.encode() == repeats_path(min_readers).read_bytes()
    assert sha256_file(repeats_path(min_readers)) == REPEATS_SHA256[min_readers]


@pytest.mark.parametrize("min_readers", MIN_READERS_CHOICES)
def test_repeats_are_patient_grouped_stratified_and_distinct(min_readers):
    base = labelled_folds(min_readers)
    share = np.bincount(base["label"], minlength=3) / len(base)  # (C,) class shares of the whole
    seen = {tuple(base["fold"])}
    for k in range(1, MAX_REPEATS):
        t = labelled_folds(min_readers, k)
        assert (t["nodule_id"] == base["nodule_id"]).all()
        assert (t.groupby("patient_id")["fold"].nunique() == 1).all(), k  # no patient in two folds of one repeat
        for f in range(N_FOLDS):
            lab = t.loc[t["fold"] == f, "label"].to_numpy()
            # each class's count in the fold within one nodule of the fold's share of the whole
            assert np.abs(np.bincount(lab, minlength=3) - len(lab) * share).max() <= 1.0, (k, f)
        seen.add(tuple(t["fold"]))
    assert len(seen) == MAX_REPEATS  # every repeat is another partition


def test_repeat_zero_keeps_its_protocol_hash_and_repeats_have_their_own():
    hashes = {protocol_hash(2, k) for k in range(MAX_REPEATS)}
    assert len(hashes) == MAX_REPEATS
    assert protocol_hash(2, 0) == protocol_hash(2)
    a = fold_table("LIDC-A", 0, 2, repeat=1).test
    assert set(a["nodule_id"]) != set(fold_table("LIDC-A", 0, 2).test["nodule_id"])


def test_make_partition_by_hand_small_case():
    # 6 patients, one nodule each, 2 of each class over 2 folds: each fold gets one of each class
    pats = [f"p{i}" for i in range(6)]
    f = make_partition(pats, [0, 0, 1, 1, 2, 2], 2, 1, n_folds=2)
    for c in range(3):
        assert sorted(f[2 * c: 2 * c + 2].tolist()) == [0, 1]
    # a patient's nodules never split
    f = make_partition(["a", "a", "a", "b", "c", "d"], [0, 1, 2, 0, 1, 2], 2, 3, n_folds=2)
    assert len(set(f[:3].tolist())) == 1


def test_sweep_matrix_and_run_take_repeats(tmp_path, capsys, monkeypatch):
    """--repeats R: every fold of partitions 0..R-1, each its own spec (key, name, protocol hash); repeat 0's spec is the
    one made before repeats existed (same key as a spec made without the argument)."""
    from benchmarks.errors import UserError
    from benchmarks.lifecycle import make_spec
    from benchmarks.run import main as run_main
    from benchmarks.sweep.matrix import matrix

    specs = matrix([2], profile="smoke", folds=[0], methods=["ce"], datasets=["LIDC-B"], repeats=3)
    assert [s.repeat for s in specs] == [0, 1, 2] and len({s.key for s in specs}) == 3
    assert len({s.protocol_hash for s in specs}) == 3 and specs[0].protocol_hash == protocol_hash(2)
    assert specs[0].key == make_spec("ce", "LIDC-B", 0, 0, "smoke").key and "_rep" not in specs[0].stem
    assert "_LIDC-B_rep2_fold0_" in specs[2].stem
    with pytest.raises(UserError, match="--repeats must be an integer in 1-10"):
        matrix([2], profile="smoke", methods=["ce"], repeats=11)
    with pytest.raises(SystemExit) as e:
        monkeypatch.setenv("CLIPLUNG_RUNS", str(tmp_path))
        run_main(["--method", "ce", "--dataset", "LIDC-B", "--profile", "smoke", "--repeats", "0"])
    assert e.value.code == 2 and "--repeats must be an integer in 1-10" in capsys.readouterr().err
