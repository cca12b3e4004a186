"""The prompt CSV files of ``napari-sam segment`` → prompts per object, and the object
ids (see the ``segment`` module docstring for the format and the id rule).

Every problem is a :class:`UserError` naming the file and its line number (as an editor
shows it: the header is line 1).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from . import UserError

POINT_COLUMNS = ("object", "row", "col")
BOX_COLUMNS = ("object", "row_min", "col_min", "row_max", "col_max")


def read_prompts(points: str | None, boxes: str | None) -> dict[str, dict]:
    """``{object: {"points": [[row, col], ...], "labels": [1|0, ...], "box": [4]}}``."""
    if not points and not boxes:
        raise UserError("give --points and/or --boxes (CSV files), or --sample")
    prompts: dict[str, dict] = {}
    for where, row in _rows(points, POINT_COLUMNS):
        q = prompts.setdefault(_object(where, row), {})
        q.setdefault("points", []).append([_num(where, row, "row"), _num(where, row, "col")])
        q.setdefault("labels", []).append(_label(where, row))
    for where, row in _rows(boxes, BOX_COLUMNS):
        q = prompts.setdefault(_object(where, row), {})
        if "box" in q:
            raise UserError(f"{where}: object {row['object']!r} has a second box; one per object")
        q["box"] = [_num(where, row, k) for k in BOX_COLUMNS[1:]]
    return prompts


def id_mapping(prompts: Mapping[str, object]) -> dict[str, int]:
    """object → id 1..N: integers sorted as numbers, names sorted as text; a mix of
    both, or two spellings of one number ("7", "07"), is refused."""
    names = list(prompts)
    numbers = {}
    for name in names:
        try:
            numbers[name] = int(name)
        except ValueError:
            pass
    if numbers and len(numbers) < len(names):
        word = next(n for n in names if n not in numbers)
        num = next(iter(numbers))
        raise UserError(
            f"the object column mixes numbers ({num!r}) and names ({word!r}); use only "
            "numbers (ids follow their numeric order) or only names (text order)"
        )
    if numbers:
        if len(set(numbers.values())) < len(numbers):
            value = next(v for v in numbers.values() if list(numbers.values()).count(v) > 1)
            same = [n for n in names if numbers[n] == value]
            raise UserError(f"objects {same} are the same number written differently")
        order = sorted(names, key=numbers.__getitem__)
    else:
        order = sorted(names)
    return {name: i for i, name in enumerate(order, start=1)}


def _rows(path: str | None, required: tuple[str, ...]):
    """(``file:line N``, row) for each data row of the CSV at ``path``."""
    if not path:
        return
    p = Path(path)
    if not p.is_file():
        raise UserError(f"prompt file not found: {p}")
    try:
        # utf-8-sig: a BOM (Excel's "CSV UTF-8") is not part of the first column's name
        with p.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [(name or "").strip() for name in reader.fieldnames or []]
            reader.fieldnames = fields
            missing = [c for c in required if c not in fields]
            if missing:
                raise UserError(f"{p.name}: missing column(s) {missing}; found {fields}")
            for row in reader:
                yield f"{p.name} line {reader.line_num}", row
    except UnicodeDecodeError:
        raise UserError(f"cannot read {p}: not UTF-8 text (save it as CSV UTF-8)") from None
    except PermissionError:
        raise UserError(f"cannot read {p}: permission denied") from None
    except csv.Error as err:
        raise UserError(f"cannot read {p}: {err}") from None


def _object(where: str, row: dict[str, str | None]) -> str:
    name = (row.get("object") or "").strip()
    if not name:
        raise UserError(f"{where}: empty object name")
    return name


def _num(where: str, row: dict[str, str | None], key: str) -> float:
    text = row.get(key)
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"{where}: not a number in column {key!r}: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise UserError(f"{where}: column {key!r} must be a finite number, got {text!r}")
    return value


def _label(where: str, row: dict[str, str | None]) -> int:
    text = (row.get("label") or "").strip()
    if not text:
        return 1
    try:
        value = float(text)
    except ValueError:
        value = None
    if value not in (0.0, 1.0):
        raise UserError(
            f"{where}: label must be 1 (positive) or 0 (negative), got {text!r}"
        )
    return int(value)  # type: ignore[arg-type]
