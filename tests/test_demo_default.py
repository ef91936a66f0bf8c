"""The README's main job, `mio demo` at its default preset, end to end (24-29 minutes on 2
cores: marked slow, run with `python -m pytest -m slow`)."""

import json

import pytest

from mio.cli.main import main
from mio.demo.report import TARGETS
from mio.eval.baselines import SUITE_BASELINES
from mio.eval.suites import HEADLINE


@pytest.mark.slow
def test_default_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["preset"] == "default" and (out / "report.html").is_file()
    instruct = metrics["checkpoints"]["instruct"]
    assert not instruct["skipped"], instruct["skipped"]
    for suite, scores in instruct["suites"].items():
        metric = HEADLINE[suite]
        low, high = scores["ci95"][metric]
        assert low <= scores[metric] <= high, suite
        assert set(scores["baselines"]) == set(SUITE_BASELINES[suite]), suite
    assert {t["suite"] for t in metrics["targets"]} == {t.suite for t in TARGETS}
    assert all(t["value"] is not None and t["baselines"] for t in metrics["targets"])
