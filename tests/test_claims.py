"""benchmarks/claims.py: a claim holds when A - B exceeds two standard errors of the seed means."""

import json
import math

import pytest

from benchmark_modules import load


@pytest.fixture(scope="module")
def claims():
    return load("claims")


def row(name, rank1, std, n=3):
    return {"name": name, "n": n, "mean": {"rank1": rank1}, "seed_std": {"rank1": std}}


def test_verdicts(claims):
    results = [row("AGW", 0.30, 0.01), row("CAJ", 0.34, 0.01), row("MBFVRD", 0.31, 0.02), row("MAUM", 0.20, 0.01),
               row("EfficientNet baseline (ID + triplet)", 0.25, 0.01), row("plain baseline", 0.5, 0.0)]
    by_claim = {r["claim"]: r for r in claims.claim_rows(results)}
    caj = by_claim["CAJ above AGW"]
    assert caj["diff"] == pytest.approx(4.0) and caj["se"] == pytest.approx(100 * math.sqrt(2 * 0.01**2 / 3))
    assert caj["verdict"] == "**yes**"
    assert by_claim["MBFVRD above AGW"]["verdict"] == "no (within 2 SE)"
    assert by_claim["MAUM above AGW"]["verdict"] == "no: below"
    # the first name present is the baseline: the ImageNet plan's, not the from-scratch one
    assert by_claim["AGW above the ID + triplet baseline"]["rows"] == ("AGW", "EfficientNet baseline (ID + triplet)")
    assert by_claim["IDKL above AGW"]["verdict"] == "not measured: no row 'IDKL'"
    assert "| CAJ (ICCV 2021) | CAJ above AGW | +4.0 (0.8) | **yes** |" in claims.markdown(list(by_claim.values()))


def test_a_row_whose_seeds_all_failed_is_not_measured(claims):
    results = [row("AGW", 0.30, 0.01), row("CAJ", 0.0, 0.0, n=0)]
    by_claim = {r["claim"]: r for r in claims.claim_rows(results)}
    assert by_claim["CAJ above AGW"]["verdict"] == "not measured: no row 'CAJ'"


def test_bad_input_is_named(claims, tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        claims.main([str(tmp_path / "missing.json")])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rows": []}))
    with pytest.raises(SystemExit, match="not an ablation result"):
        claims.main([str(other)])
