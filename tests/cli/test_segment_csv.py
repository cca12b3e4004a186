"""``napari-sam segment`` prompt CSVs: object ids follow the numeric order of integer
object values, labels are strictly 0 / 1 (errors name the line), Excel's BOM is fine."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sam.cli import main
from napari_sam.engine.decode.predictor import Predictor, PredictResult


@pytest.fixture
def square_decoder(monkeypatch):
    """Deterministic decoder: the mask is the 5 × 5 square around the first point (or
    the box), so the ids written at each object's place show the id mapping."""

    def predict(self, points=None, labels=None, box=None, multimask=True, **_):
        h, w = self.embedding.original_size
        mask = np.zeros((h, w), bool)
        if box is not None:
            r0, c0, r1, c1 = (int(v) for v in box)
            mask[r0 : r1 + 1, c0 : c1 + 1] = True
        else:
            r, c = (int(v) for v in points[0])
            mask[max(r - 2, 0) : r + 3, max(c - 2, 0) : c + 3] = True
        n = 3 if multimask else 1
        return PredictResult(np.repeat(mask[None], n, 0), np.ones(n, np.float32),
                             np.zeros((n, 32, 32), np.float32))

    monkeypatch.setattr(Predictor, "predict", predict)


def run(tmp_path, ckpt, csv_text, *, boxes=None, encoding="utf-8"):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((60, 60), np.uint16))
    (tmp_path / "pts.csv").write_bytes(csv_text.encode(encoding))
    argv = ["segment", str(tmp_path / "img.tif"), "--points", str(tmp_path / "pts.csv"),
            "--model", "tiny", "--checkpoint", str(ckpt), "--precision", "fp32",
            "--out", str(tmp_path / "out"), "--overwrite"]
    if boxes is not None:
        (tmp_path / "boxes.csv").write_text(boxes)
        argv += ["--boxes", str(tmp_path / "boxes.csv")]
    return main(argv)


def labels(tmp_path):
    return tifffile.imread(tmp_path / "out" / "labels.tif")


def test_integer_objects_get_ids_in_numeric_order(tmp_path, tiny_checkpoint, capsys,
                                                  square_decoder):
    # twelve objects 1..12 at rows 4, 8, ... ; written in a shuffled order
    rows = {obj: 4 * obj for obj in range(1, 13)}
    order = [10, 2, 12, 1, 11, 3, 4, 5, 6, 7, 8, 9]
    text = "object,row,col\n" + "".join(f"{o},{rows[o]},10\n" for o in order)
    assert run(tmp_path, tiny_checkpoint, text) == 0, capsys.readouterr().err
    lab = labels(tmp_path)
    assert [int(lab[rows[o], 10]) for o in range(1, 13)] == list(range(1, 13))
    out = capsys.readouterr().out
    assert "object → id" not in out  # identity: nothing to explain

    # 2, 10, 30 → ids 1, 2, 3 in numeric order (text order would give 10 → 1)
    text = "object,row,col\n30,40,10\n2,10,10\n10,25,10\n"
    assert run(tmp_path, tiny_checkpoint, text) == 0
    lab = labels(tmp_path)
    assert (int(lab[10, 10]), int(lab[25, 10]), int(lab[40, 10])) == (1, 2, 3)
    assert "object → id: 2 → 1, 10 → 2, 30 → 3" in capsys.readouterr().out


def test_names_are_sorted_as_text_and_the_mapping_printed(tmp_path, tiny_checkpoint, capsys,
                                                          square_decoder):
    text = "object,row,col\nnucleus_b,30,10\nnucleus_a,10,10\n"
    boxes = "object,row_min,col_min,row_max,col_max\ncell,45,40,55,50\n"
    assert run(tmp_path, tiny_checkpoint, text, boxes=boxes) == 0
    lab = labels(tmp_path)
    assert (int(lab[50, 45]), int(lab[10, 10]), int(lab[30, 10])) == (1, 2, 3)
    assert "object → id: cell → 1, nucleus_a → 2, nucleus_b → 3" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("object,row,col\n1,10,10\na,20,20\n", "mixes numbers ('1') and names ('a')"),
        ("object,row,col\n7,10,10\n07,20,20\n", "same number"),
        ("object,row,col,label\n1,10,10,1\n1,20,20,0.7\n",
         "pts.csv line 3: label must be 1 (positive) or 0 (negative), got '0.7'"),
        ("object,row,col,label\n1,10,10,2\n", "pts.csv line 2: label must be 1"),
        ("object,row,col,label\n1,10,10,yes\n", "line 2: label must be"),
        ("object,row,col\n1,10,10\n1,ten,10\n", "pts.csv line 3: not a number in column 'row'"),
        ("object,row,col\n1,10,nan\n", "line 2: column 'col' must be a finite number"),
        ("object,row,col\n,10,10\n", "line 2: empty object name"),
    ],
)
def test_bad_rows_name_the_line(tmp_path, tiny_checkpoint, capsys, text, message):
    assert run(tmp_path, tiny_checkpoint, text) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_excel_csv_with_bom_and_labels(tmp_path, tiny_checkpoint, capsys, square_decoder):
    """Excel's "CSV UTF-8" starts with a BOM; "0.0" / "1.0" / empty labels are fine."""
    text = "object,row,col,label\r\n1,10,10,1.0\r\n1,50,50,0\r\n2,30,30,\r\n"
    assert run(tmp_path, tiny_checkpoint, text, encoding="utf-8-sig") == 0, (
        capsys.readouterr().err
    )
    lab = labels(tmp_path)
    assert (int(lab[10, 10]), int(lab[30, 30])) == (1, 2)


def test_a_second_box_for_an_object_is_refused(tmp_path, tiny_checkpoint, capsys):
    boxes = "object,row_min,col_min,row_max,col_max\na,1,1,5,5\na,10,10,20,20\n"
    assert run(tmp_path, tiny_checkpoint, "object,row,col\n", boxes=boxes) == 2
    assert "boxes.csv line 3: object 'a' has a second box" in capsys.readouterr().err
