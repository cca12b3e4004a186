"""The progress pumps: whole_steps (one yield per unit) and within_step (a nested job
as one step of an outer one)."""

from __future__ import annotations

from napari_sam.engine.progress import Progress, run_to_end, whole_steps, within_step


def inner(closed: list[bool]):
    try:
        yield Progress(0, 3, "a")
        yield Progress(2, 3, "b")
        return "value"
    finally:
        closed.append(True)


def test_within_step_relabels_returns_and_closes():
    closed: list[bool] = []

    def outer():
        result = yield from within_step(inner(closed), 4, 10, "slice 4")
        yield Progress(5, 10, f"slice 4: {result}")

    assert list(outer()) == [
        Progress(4, 10, "slice 4: a"),
        Progress(4, 10, "slice 4: b"),
        Progress(5, 10, "slice 4: value"),
    ]
    assert closed == [True]
    gen = within_step(inner(closed), 0, 1, "x")
    next(gen)
    gen.close()  # cancelling the outer job closes the nested one
    assert closed == [True, True]


def test_whole_steps_and_run_to_end():
    closed: list[bool] = []
    assert [p.done for p in whole_steps(inner(closed))] == [1, 2]
    assert run_to_end(whole_steps(inner(closed))) == "value"
