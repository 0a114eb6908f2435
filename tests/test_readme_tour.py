"""The README's command-line tour is accepted exactly as written, and each line reaches the right function.

The heavy work (writing 100 identities, 40 epochs of ResNet-50) is replaced by
recorders: what is tested here is the command line itself (options and
``key=value`` overrides in any order), which broke once without any test noticing.
"""

import re
import shlex
import types

import pytest

from conftest import REPO
from vireid.cli.main import build_parser, main, parse_args


def tour_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"### The pipeline from the command line\s+```bash\n(.*?)```", text, re.S)
    assert block, "README has no '### The pipeline from the command line' bash block"
    lines = [line.split("  #")[0].rstrip() for line in block.group(1).splitlines()]
    joined = "\n".join(lines).replace("\\\n", " ")  # shell line continuations
    commands = [shlex.split(line) for line in joined.splitlines() if line.strip()]
    assert commands and all(c[0] == "vireid" for c in commands)
    return [c[1:] for c in commands]


@pytest.mark.parametrize("argv", tour_commands(), ids=lambda a: a[0])
def test_tour_command_parses_as_written(argv):
    args = parse_args(build_parser(), argv)
    assert callable(args.func)


def test_tour_commands_reach_the_application_layer(monkeypatch, tmp_path, capsys):
    import vireid.app.runs as runs
    import vireid.data.check as check
    import vireid.synth.generator as generator

    calls = {}

    def fake_generate(out, layout, ids, **kw):
        calls["synth"] = (str(out), layout, ids, kw["seed"])
        return {"images": 0, "visible": 0, "infrared": 0, "ids": ids, "layout": layout, "root": out,
                "rand_perm_cam": True}

    def fake_check(root, dataset, **kw):
        calls["check"] = (str(root), dataset)
        return types.SimpleNamespace(format=lambda: "ok", ok=True)

    def fake_train(config, data_root, out, overrides, **kw):
        calls["train"] = (config, str(data_root), str(out), list(overrides))
        return tmp_path / "checkpoint.pt"

    class FakeResult:
        def format_table(self):
            return "table"

        def write_json(self, path):
            calls["json"] = path

    def fake_evaluate_run(run, data_root, protocol, **kw):
        calls["eval"] = (str(run), str(data_root), protocol)
        return FakeResult()

    monkeypatch.setattr(generator, "generate", fake_generate)
    monkeypatch.setattr(check, "check_dataset", fake_check)
    monkeypatch.setattr(runs, "train", fake_train)
    monkeypatch.setattr(runs, "evaluate_run", fake_evaluate_run)
    monkeypatch.chdir(tmp_path)
    for argv in tour_commands():
        assert main(argv) == 0, argv
    assert calls["synth"] == ("data/sysu", "sysu", 100, 0)
    assert calls["check"] == ("data/sysu", "sysu")
    assert calls["train"] == ("idkl_sysu", "data/sysu", "runs/idkl",
                              ["train.epochs=40", "model.pretrained=resnet50-19c8e357.pth"])
    assert calls["eval"] == ("runs/idkl", "data/sysu", "sysu/all/single/seeded")
    assert calls["json"] == "eval.json"
    assert "sysu/all/single/seeded" in capsys.readouterr().out  # 'vireid protocols' ran for real


def test_overrides_before_and_after_options_keep_their_order():
    args = parse_args(build_parser(), ["train", "cfg", "a.b=1", "--data-root", "d", "--out", "o", "c.d=2"])
    assert args.overrides == ["a.b=1", "c.d=2"]


def test_stray_argument_is_still_an_error(capsys):
    with pytest.raises(SystemExit):
        parse_args(build_parser(), ["eval", "run", "--data-root", "d", "a.b=1"])
    assert "unrecognized arguments: a.b=1" in capsys.readouterr().err
