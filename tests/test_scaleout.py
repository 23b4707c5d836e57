"""``--workers N``: the sweep's independent chains as Ray tasks give the sequential results."""
import csv
import os

import pytest

ray = pytest.importorskip("ray")


def _rows(path):
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    return [{k: v for k, v in row.items() if k not in ("seconds", "seconds_per_batch")} for row in rows]


def test_two_ray_workers_give_the_sequential_results(tiny):
    tiny.cfg["experiments"]["methods"] = ["ThresNet", "FilterThresNet"]
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.6, 0.3]}]
    tiny.cfg["training"]["numEpochs"] = 1
    assert tiny.run(out="sequential") == 0
    assert tiny.run("--workers", "2", out="ray") == 0
    assert _rows(tiny.path("ray", "results.csv")) == _rows(tiny.path("sequential", "results.csv"))
    assert sorted(os.listdir(tiny.path("ray", "steps"))) == sorted(os.listdir(tiny.path("sequential", "steps")))
    assert tiny.run("--workers", "2", out="ray") == 0  # a rerun skips every finished step


def test_without_ray_workers_say_what_to_install(tiny, capsys, monkeypatch):
    import sys

    from conftest import one_error_line

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert tiny.run("--workers", "2") == 2
    one_error_line(capsys, "--workers needs Ray", "pip install -e \".[ray]\"")
    assert not os.path.exists(tiny.path("out"))
