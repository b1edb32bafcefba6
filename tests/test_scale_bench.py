"""``python -m evaluation.bench``: the measurements ``docs/scaling.md`` sizes clusters with."""

from __future__ import annotations

import pytest

from evaluation.bench import bench_runs, bench_store, main


def test_runs_bench_measures_a_real_run() -> None:
    (row,) = bench_runs("expert", ["oval"], [1])
    assert row["track"] == "oval" and row["laps"] == 1 and row["laps_completed"] == 1
    assert row["length_m"] == pytest.approx(33.7, abs=0.1)
    assert row["sim_s"] > 10 and 0 < row["cpu_s"] and 0 < row["wall_s"]
    assert row["cpu_per_sim_s"] == pytest.approx(row["cpu_s"] / row["sim_s"], rel=0.01)


def test_store_bench_fits_a_line_through_real_transactions() -> None:
    out = bench_store([1, 8, 32], repeats=1)
    assert [p["rows"] for p in out["points"]] == [1, 8, 32]
    assert all(p["wall_s"] > 0 and p["rows_per_s"] > 0 for p in out["points"])
    assert out["per_row_cpu_ms"] > 0 and out["rows_per_s_cpu"] > 0
    assert out["trajectory_points_per_row"] > 100  # real rows, trajectory included
    assert out["bytes_per_row"] > 1000


def test_bench_cli_bad_pilot_is_one_line(capsys) -> None:
    assert main(["runs", "no-such-pilot", "--tracks", "oval", "--laps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: pilot 'no-such-pilot' could not be loaded")
