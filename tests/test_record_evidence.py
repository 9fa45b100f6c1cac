"""A record's predictions are evidence, checked against the protocol; damaged weights and records are redone
and kept side by side."""
import json
import shutil

import pytest

from benchmarks.data.protocols import CLASS_NAMES, fold_table
from benchmarks.records import ROW_SUM_TOL, predictions_problem
from tests.records_synth import record, write


def _bad_id(r):
    r["predictions"][3]["id"] = "LIDC-IDRI-9999/not-a-nodule"


def _missing_id(r):
    del r["predictions"][3]["id"]


def _label_out_of_range(r):
    r["predictions"][3]["label"] = 7


def _wrong_label(r):
    p = r["predictions"][3]
    p["label"] = next(i for i in range(len(r["data"]["class_names"])) if i != p["label"])


def _twice(r):
    r["predictions"][4] = json.loads(json.dumps(r["predictions"][3]))


def _nodule_missing(r):
    del r["predictions"][3]


def _rows_not_summing_to_1(r):
    r["predictions"][3]["probs"] = [0.5] + [0.2] * (len(r["predictions"][3]["probs"]) - 1)


def _above_1(r):
    for p in r["predictions"]:
        p["probs"] = [10 * q for q in p["probs"]]


# Each edit, and the words of the warning that names it.
EDITS = {
    "bad id": (_bad_id, "names 'LIDC-IDRI-9999/not-a-nodule', not a test nodule of LIDC-B fold 0"),
    "missing id": (_missing_id, "prediction 4 of 170 has no nodule id"),
    "label out of range": (_label_out_of_range, "has label 7, not a class index 0-2"),
    "label not the protocol's": (_wrong_label, "the protocol's is"),
    "nodule twice": (_twice, "is listed twice"),
    "nodule missing": (_nodule_missing, "1 test nodule(s) of LIDC-B fold 0 are not in its predictions"),
    "rows not summing to 1": (_rows_not_summing_to_1, "sum to 0.9, not 1"),
    "values above 1": (_above_1, "a probability lies outside [0, 1]"),
}


def fold_labels(dataset, fold, min_readers=2):
    t = fold_table(dataset, fold, min_readers).test
    return {str(i): CLASS_NAMES[int(y)] for i, y in zip(t["nodule_id"], t["label"])}


@pytest.mark.parametrize("kind", sorted(EDITS))
def test_each_edit_of_the_predictions_is_named(kind):
    r = record("ce", "LIDC-B", 0, 0.8)
    truth = fold_labels("LIDC-B", 0)
    assert predictions_problem(r, truth) is None
    edit, words = EDITS[kind]
    edit(r)
    problem = predictions_problem(r, truth)
    assert problem is not None and words in problem, problem


def test_rounding_to_6_decimals_is_within_the_tolerance_and_a_pilot_may_lack_its_missing_nodules():
    # Three probabilities rounded to 6 decimals: their sum moves by at most 1.5e-6, well within the tolerance.
    r = record("ce", "LIDC-B", 0, 0.8)
    for p in r["predictions"]:
        p["probs"] = [round(1 / 3, 6)] * 3  # sums to 0.999999
    assert predictions_problem(r, fold_labels("LIDC-B", 0)) is None and 3 * 5e-7 < ROW_SUM_TOL
    pilot = record("ce", "LIDC-B", 0, 0.8, partial=5)  # 5 test nodules without a crop: the record says so
    assert predictions_problem(pilot, fold_labels("LIDC-B", 0)) is None
    pilot["data"]["missing"]["test"] = 4
    assert "5 test nodule(s) of LIDC-B fold 0 are not in its predictions (it says 4 had no crop)" in predictions_problem(
        pilot, fold_labels("LIDC-B", 0))


@pytest.fixture(scope="module")
def good_records():
    """Three methods on the two datasets of Table 2, five folds each."""
    return [record(m, d, f, a0 + 0.02 * f) for m, a0 in (("ce", 0.7), ("nsb", 0.75), ("clip_lung", 0.8))
            for d in ("LIDC-B", "LIDC-C") for f in range(5)]


COMMANDS = {
    "tables": ("benchmarks.tables", ["--tables", "2", "--bootstrap", "200"]),
    "figures tables": ("benchmarks.figures", ["tables", "--tables", "2"]),
    "figures cd": ("benchmarks.figures", ["cd", "--tables", "2"]),
    "report": ("benchmarks.report", ["--tables", "2", "--bootstrap", "200"]),
}


@pytest.mark.parametrize("kind", sorted(EDITS))
def test_every_command_that_reads_records_leaves_an_edited_record_out_naming_why(kind, good_records, tmp_path, caplog, capsys):
    """The record of ce on LIDC-B fold 0, edited; every command ends with exit 0 and one warning naming the file and the
    problem (before: a traceback from the bootstrap for a bad or missing id, silence for the others)."""
    import importlib

    recs = json.loads(json.dumps(good_records))
    edit, words = EDITS[kind]
    edit(recs[0])
    assert recs[0]["method"] == "ce" and recs[0]["dataset"] == "LIDC-B" and recs[0]["fold"] == 0
    base = write(tmp_path / "runs", recs)
    for name, (module, args) in COMMANDS.items():
        runs = tmp_path / name.replace(" ", "_") / "runs"  # one folder per command: each warning is its own
        shutil.copytree(base, runs)
        caplog.clear()
        with caplog.at_level("WARNING"):
            try:
                importlib.import_module(module).main(args + ["--runs", str(runs), "--out", str(tmp_path / name.replace(" ", "_") / "out")])
            except SystemExit as e:
                assert e.code in (0, None), (name, e.code, capsys.readouterr().err)
        said = [m for m in caplog.messages if "r000.json" in m]
        assert len(said) == 1 and words in said[0], (name, said)
        assert "Traceback" not in capsys.readouterr().err


@pytest.fixture
def runs_env(tmp_path, monkeypatch):
    from benchmarks import records

    monkeypatch.setenv(records.RUNS_ENV, str(tmp_path / "runs"))
    return tmp_path / "runs"


def test_damaged_weights_are_one_line_and_make_run_redo_the_record(runs_env, caplog):
    """A garbled .pt (same size) beside a whole record: the figures' loader says which file and why in one line
    (never PyTorch's advice to turn weights_only off); run does not reuse the record and keeps the damaged file
    aside (a real run redoing it: tests/test_hardening.py)."""
    import os

    import torch

    from benchmarks import interpret
    from benchmarks.errors import UserError
    from benchmarks.lifecycle import existing_record, make_spec
    from benchmarks.records import write_record

    spec = make_spec("ce", "LIDC-C", 1, profile="smoke")
    rec = {**record("ce", "LIDC-C", 1, 0.8), "weights": spec.path(".pt").name}
    write_record(spec.path(".json"), rec)
    pt = spec.path(".pt")
    torch.save({"method": "ce", "state_dict": {"w": torch.ones(3)}}, pt)
    assert existing_record(spec) == rec  # whole: reused
    good = pt.read_bytes()
    for damage in (os.urandom(len(good)), good[: len(good) // 2]):
        pt.write_bytes(damage)
        with pytest.raises(UserError) as e:
            interpret.load_model({**rec, "_path": str(spec.path(".json"))}, "cpu")
        msg = str(e.value)
        assert "\n" not in msg and str(pt) in msg and ("garbled" in msg or "truncated" in msg) and "weights_only" not in msg, msg
        assert "--force" in msg  # and how to get them back
    with caplog.at_level("WARNING"):
        assert existing_record(spec) is None  # so run_one trains it again
    assert pt.with_name(pt.name + ".bad").read_bytes() == damage and not pt.exists()
    assert any("weights of" in m and "damaged" in m and "truncated" in m for m in caplog.messages), caplog.messages
    assert existing_record(spec) is None and "missing" in caplog.messages[-1]  # no weights at all: redone too


def test_a_second_damaged_record_is_kept_beside_the_first(runs_env):
    from benchmarks.lifecycle import existing_record, make_spec

    spec = make_spec("ce", "LIDC-C", 2, profile="smoke")
    path = spec.path(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    for i, junk in enumerate([b"{truncated", b"\x00\x01binary", b"[1, 2]"]):
        path.write_bytes(junk)
        assert existing_record(spec) is None and not path.exists()
        assert path.with_name(path.name + (".bad" + (f".{i}" if i else ""))).read_bytes() == junk
