import json

import numpy as np
import pytest

from vireid.evaluation import ProtocolResult, trial_summary


def test_rank_k_beyond_a_short_cmc_is_its_last_value():
    summary = trial_summary({"cmc": np.array([0.5, 0.75, 1.0], np.float32), "mAP": 0.6, "mINP": 0.4})
    assert summary["rank1"] == 0.5 and summary["rank5"] == 1.0 and summary["rank20"] == 1.0


def test_mean_std_and_json_round_trip(tmp_path):
    result = ProtocolResult("llcm/i2v", rerank=False)
    for r1 in (0.4, 0.6):
        result.add({"cmc": np.full(20, r1, np.float32), "mAP": r1 / 2, "mINP": r1 / 4})
    assert result.mean["rank1"] == pytest.approx(0.5) and result.std["rank1"] == pytest.approx(0.1)
    path = tmp_path / "out" / "eval.json"
    result.write_json(path)
    data = json.loads(path.read_text())
    assert data["trials"][1]["mAP"] == pytest.approx(0.3)
    assert list(tmp_path.joinpath("out").iterdir()) == [path]  # no temp file left behind
    assert "llcm/i2v (mean ± std, 2 trials)" in result.format_markdown()
