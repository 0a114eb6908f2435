"""Markdown tables of docs/dan.md from the eval JSON files of scripts/dan_report.sh.

Usage: python3 scripts/dan_table.py WORKDIR
"""

import json
import sys
from pathlib import Path

import yaml

W = Path(sys.argv[1]) / "runs"
KINDS = ("noise", "lighting", "color", "occlusion")


def cell(path: Path) -> str:
    if not path.is_file():
        return "—"
    r = json.loads(path.read_text())
    return f"{100 * r['mean']['rank1']:.1f} / {100 * r['mean']['mAP']:.1f}"


def main() -> None:
    print("| model | " + " | ".join(KINDS) + " |")
    print("| --- |" + " --- |" * len(KINDS))
    rows = [("source-only", lambda k: W / "source_only" / f"eval_{k}.json"),
            ("DAN", lambda k: W / f"dan_{k}" / "eval.json"),
            ("supervised target (upper bound)", lambda k: W / f"supervised_{k}" / "eval.json")]
    for name, path in rows:
        print(f"| {name} | " + " | ".join(cell(path(k)) for k in KINDS) + " |")
    print(f"\nunshifted target, source-only: {cell(W / 'source_only' / 'eval_raw.json')}\n")
    print("| noise target, 10 adaptation epochs | R1 / mAP |\n| --- | --- |")
    for name, run in (("source-only", "long_source_only/eval_noise.json"), ("DAN", "long_dan_noise/eval.json"),
                      ("supervised target", "long_supervised_noise/eval.json")):
        print(f"| {name} | {cell(W / run)} |")
    print()
    print("| ablation (color target) | R1 / mAP |\n| --- | --- |")
    for name, run in (("source-only", "source_only/eval_color.json"), ("+DAA", "only_daa_color/eval.json"),
                      ("+soft labels", "only_soft_color/eval.json"), ("+CMA", "only_cma_color/eval.json"),
                      ("DAN (all three)", "dan_color/eval.json")):
        print(f"| {name} | {cell(W / run)} |")
    print("\n| sweep (held-out color target) | R1 / mAP |\n| --- | --- |")
    print(f"| source-only | {cell(W / 'source_only' / 'eval_sweep.json')} |")
    for run in sorted(W.glob("sweep*")):
        r = yaml.safe_load((run / "config.yaml").read_text())["recipe"]
        print(f"| lambda1={r['lambda1']}, lambda2={r['lambda2']}, lambda3={r['lambda3']} | "
              f"{cell(run / 'eval.json')} |")


if __name__ == "__main__":
    main()
