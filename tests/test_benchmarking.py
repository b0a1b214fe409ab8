"""The noise rules every benchmark applies: interleaved rounds, spreads, no ratio from noise."""

from __future__ import annotations

import multiprocessing

import pytest

from alphagan.benchmarking import MAX_SPREAD, UNSTABLE, Rounds, busy_cores, interleaved, ratio, result_of, verdict


def test_rounds_are_interleaved_program_by_program():
    calls = []
    runs = interleaved({"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}, rounds=3)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert runs["a"].values == (1.0, 1.0, 1.0) and runs["b"].median == 2.0


def test_a_ratio_needs_two_steady_sides():
    steady_fast, steady_slow = Rounds("fast", (100.0, 104.0, 98.0)), Rounds("slow", (50.0, 52.0, 49.0))
    assert ratio(steady_fast, steady_slow) == pytest.approx(100 / 50)
    noisy = Rounds("noisy", (26.0, 120.0, 222.0))  # the shared-machine rounds
    assert noisy.spread > MAX_SPREAD and not noisy.stable
    assert ratio(noisy, steady_slow) is None and ratio(steady_fast, noisy) is None
    assert ratio(Rounds("one", (100.0,)), steady_slow) is None  # one round shows no spread: not a result
    assert verdict(None, 0.5, "x / y").startswith(f"x / y: {UNSTABLE}")
    assert verdict(0.61, 0.5, "x / y") == "x / y: 0.61x (target >= 0.5x): MET"
    assert verdict(0.41, 0.5, "x / y").endswith("NOT MET")
    assert steady_fast.summary() == "98 / 100 / 104 (6%)" and noisy.summary().endswith("!)")


def _exit_at_once() -> None:
    raise SystemExit(3)


def test_a_child_that_dies_is_an_error_not_a_hang():
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_exit_at_once)
    process.start()
    with pytest.raises(SystemExit, match="died \\(exit code 3\\)"):
        result_of(process, queue, "train")
    process.join()


def test_busy_cores_is_a_core_count():
    busy = busy_cores(0.2)
    assert 0.0 <= busy <= multiprocessing.cpu_count() + 0.01
