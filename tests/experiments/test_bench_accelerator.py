"""experiments/bench_accelerator.py at toy size: every figure it reports is produced and sane."""

import json
from pathlib import Path

import pytest

from experiments import bench_accelerator

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_benchmark_reports_throughput_flops_and_decode(tmp_path):
    out = tmp_path / "bench.json"
    report = bench_accelerator.main(["--preset", "tiny", "--repeats", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    config = bench_accelerator.PRESETS["tiny"]["config"]
    tokens = report["devices"] * report["rows_per_device"] * report["seq_len"]
    for name in ("sft", "gift"):
        r = report["train"][name]
        assert r["step_s"] > 0 and r["tokens_per_s"] == pytest.approx(tokens / r["step_s"])
        assert r["hlo_flops_per_device"] > 0 and r["loss"] > 0
        assert r["mfu"] is None  # no peak rate is known for a CPU
    # GIFT adds the frozen base's forward: a third of an SFT step's model FLOPs.
    assert report["train"]["gift"]["model_flops"] == pytest.approx(report["train"]["sft"]["model_flops"] * 4 / 3)
    assert report["train"]["sft"]["model_flops"] == pytest.approx(
        bench_accelerator.model_flops_per_token(config, report["seq_len"], base_forward=False) * tokens
    )
    decode = report["decode"]
    assert decode["tokens_per_s"] > 0 and decode["rows"] == 8
