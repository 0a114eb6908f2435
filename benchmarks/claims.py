"""The papers' headline claims, read off an ablation result (`vireid ablate ... --out DIR` writes DIR/ablation.json).

    python3 benchmarks/claims.py runs/ablation_cpu_imagenet/ablation.json

For each claim "row A above row B" it prints the difference of the seed means of rank-1 (points), its standard
error SE = sqrt(s_A^2 / n_A + s_B^2 / n_B) from the per-seed standard deviations, and whether A - B > 2 SE. A claim
whose rows are not in the result says so. Row names are the plan's (benchmarks/ablation_cpu*.yaml); where the two
CPU plans name the same role differently, the first name present is used.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

L_B = "IDKL T4: L_b"
AGW = "AGW"
# (paper, claim, the row(s) that should be higher, the row(s) it is compared with): alternatives in a tuple
CLAIMS = [
    ("IDKL (CVPR 2024)", "Table 4: + tgsa above L_b", "IDKL T4: L_b + tgsa", L_B),
    ("IDKL", "Table 4: + ip + tgsa above L_b", "IDKL T4: L_b + ip + tgsa", L_B),
    ("IDKL", "Table 4: + ip + csa above L_b", "IDKL T4: L_b + ip + csa", L_B),
    ("IDKL", "Table 4: + ip + mdr above L_b", "IDKL T4: L_b + ip + mdr", L_B),
    ("IDKL", "Table 4: full IDKL above L_b", "IDKL", L_B),
    ("IDKL", "IDKL above AGW", "IDKL", AGW),
    ("CAJ (ICCV 2021)", "CAJ above AGW", "CAJ", AGW),
    ("MBFVRD", "MBFVRD above AGW", "MBFVRD", AGW),
    ("HcTri", "the hetero-center triplet adds to AGW", "AGW + hetero-center", AGW),
    ("MAUM (CVPR 2022)", "MAUM above AGW", "MAUM", AGW),
    ("CM-LSP-GE", "CM-LSP-GE above AGW", "CM-LSP-GE", AGW),
    ("AGW (TPAMI 2021)", "AGW above the ID + triplet baseline", AGW,
     ("EfficientNet baseline (ID + triplet)", "plain baseline")),
    ("MSCLNet (ECCV 2022)", "MSCLNet above its base AGW* (ID + WRT)", "MSCLNet", ("MSCLNet base (AGW*)",)),
    ("SPOT", "keypoint guidance above fixed stripes", "SPOT", ("spot_nopose",)),
]


def _pick(by_name: dict, names) -> dict | None:
    for name in (names,) if isinstance(names, str) else names:
        if name in by_name and by_name[name].get("n"):
            return by_name[name]
    return None


def _names(names) -> str:
    return " or ".join(f"'{n}'" for n in ((names,) if isinstance(names, str) else names))


def compare(a: dict, b: dict, metric: str = "rank1", z: float = 2.0) -> dict:
    """A - B in points with its standard error from the per-seed standard deviations."""
    diff = 100 * (a["mean"][metric] - b["mean"][metric])
    se = 100 * math.sqrt(a["seed_std"][metric] ** 2 / a["n"] + b["seed_std"][metric] ** 2 / b["n"])
    return {"diff": diff, "se": se, "holds": diff > z * se, "below": diff < -z * se}


def claim_rows(results: list[dict]) -> list[dict]:
    by_name = {r["name"]: r for r in results}
    rows = []
    for paper, claim, high, low in CLAIMS:
        a, b = _pick(by_name, high), _pick(by_name, low)
        row = {"paper": paper, "claim": claim}
        if a is None or b is None:
            missing = [n for n, r in ((high, a), (low, b)) if r is None]
            row["verdict"] = "not measured: no row " + "; ".join(_names(m) for m in missing)
        else:
            c = compare(a, b)
            row.update(c, rows=(a["name"], b["name"]))
            row["verdict"] = ("**yes**" if c["holds"] else "no: below" if c["below"]
                              else "no (within 2 SE)")
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| paper | claim | R1 difference, points (SE) | holds? |", "| --- | --- | --- | --- |"]
    for r in rows:
        number = f"{r['diff']:+.1f} ({r['se']:.1f})" if "diff" in r else ""
        lines.append(f"| {r['paper']} | {r['claim']} | {number} | {r['verdict']} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result", help="ablation.json written by vireid ablate")
    args = ap.parse_args(argv)
    path = Path(args.result)
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (vireid ablate PLAN --out DIR writes DIR/ablation.json)")
    data = json.loads(path.read_text())
    if "results" not in data:
        raise SystemExit(f"{path}: not an ablation result (no 'results' list)")
    print(markdown(claim_rows(data["results"])))


if __name__ == "__main__":
    main()
