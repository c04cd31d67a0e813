"""`experiments/pipeline.py --preset smoke` end to end (the shipped toy base, both inits, RL, report)."""

import json

import pytest

from experiments import pipeline

pytestmark = pytest.mark.slow  # the whole toy pipeline (two inits, RL, evaluation)


def test_smoke_pipeline_writes_results_table_and_plots(tmp_path):
    assert (pipeline.SHIPPED_BASE / "world.json").exists(), "the shipped toy base is missing"
    assert pipeline.main(["--preset", "smoke", "--workdir", str(tmp_path)]) == 0
    assert not list(tmp_path.glob("base*"))  # the shipped base matched the world: no re-pretraining
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {(r["init"], r["beta"]) for r in rows} == {("sft", None), ("gift", 4.0)}
    for row in rows:
        for stage in ("pre_rl", "post_rl"):
            values = [v for k, v in row[stage].items() if k.startswith(("pass@", "avg@", "style_", "boxed"))]
            assert values and all(0.0 <= v <= 1.0 for v in values), row[stage]
            assert row[stage]["pass@1"] <= row[stage]["pass@4"]
        assert (tmp_path / row["rl_metrics"]).exists()
    table = (tmp_path / "results.md").read_text()
    assert "| hard | sft |" in table and "gift (beta=4)" in table
    assert (tmp_path / "pass_at_k.png").stat().st_size > 0 and (tmp_path / "rl_curves.png").stat().st_size > 0
    # A repeated command resumes: finished rows are kept, nothing is rerun.
    assert pipeline.main(["--preset", "smoke", "--workdir", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == rows
    # Runs in parallel processes give the same numbers: each run is seeded on its own.
    parallel = tmp_path / "parallel"
    assert pipeline.main(["--preset", "smoke", "--workdir", str(parallel), "--jobs", "2"]) == 0
    assert json.loads((parallel / "results.json").read_text())["rows"] == rows
