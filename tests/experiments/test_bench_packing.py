"""experiments/bench_packing.py runs and reports packing filling rows far better than padding."""

import re
import sys
from pathlib import Path

from experiments import bench_packing

REPO = Path(__file__).resolve().parents[2]


def test_bench_packing_prints_the_fill_of_both_layouts(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_packing.py", "--num", "600", "--global-batch", "8"])
    bench_packing.main()
    out = capsys.readouterr().out
    padded, packed, ratio = map(float, re.search(r"fill fraction\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", out).groups())
    assert 0 < padded < 0.6 and packed > 0.9 and ratio > 2
