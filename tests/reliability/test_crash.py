"""Crash safety, fast version: 3 SIGKILL trials against a server forked from a preloaded forkserver
(`make soak` runs 20 against `freebind serve` itself). See harness/crash.py for the checks."""

from __future__ import annotations

from harness.crash import run_trials


def test_acknowledged_writes_survive_kill_9_and_nothing_is_half_written(space_file, tmp_path):
    results = run_trials(space_file, tmp_path / "data", trials=3, launcher="fork", writers=6, kill_after_acks=(5, 30),
                         seed=8)
    assert len(results) == 3
    assert all(r.acked_writes > 0 for r in results), results  # the kills landed during ingestion
