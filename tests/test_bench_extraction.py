"""benchmarks/extraction.py's choice of the query budget from the open-TA table (issue 13: the budget
that keeps the clone's and distillation's head starts <= 2 points)."""

from __future__ import annotations

from benchmarks.extraction import pick_budget


def _row(queries: int, clone: float, distill: float, defence: str = "none") -> dict:
    return {"defence": defence, "queries": queries, "clone_head_start": clone, "distill_head_start": distill}


def test_budget_is_the_largest_count_under_the_bound():
    rows = [_row(5040, -15.6, 0.7), _row(1260, -25.4, 1.5), _row(20160, -7.4, 0.5)]
    assert pick_budget(rows) == 20160


def test_budget_stops_below_the_first_count_over_the_bound():
    # a later count back under the bound does not count: a budget there would allow the one over it
    rows = [_row(1260, -25.4, 1.5), _row(5040, 2.5, 0.7), _row(20160, -7.4, 1.9)]
    assert pick_budget(rows) == 1260
    assert pick_budget([_row(1260, 0.0, 2.01)]) is None
    assert pick_budget([_row(1260, 0.0, 2.0)]) == 1260  # <= 2 holds


def test_budget_reads_only_the_open_ta():
    rows = [_row(1260, -25.4, 1.5), _row(99999, -40.0, 0.1, defence="range check")]
    assert pick_budget(rows) == 1260
