"""The `vireid` console entry: commands and one-line errors."""

import pytest

from vireid.cli.main import main


def test_protocols_lists_names_with_descriptions(capsys):
    assert main(["protocols", "sysu/indoor"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and all(line.startswith("sysu/indoor/") for line in out)
    assert "cams 1,2" in out[0]


def test_unknown_prefix_is_one_line_error(capsys):
    assert main(["protocols", "cuhk"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "vireid: error: no protocol name starts with 'cuhk'; run 'vireid protocols' to list them"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "protocols" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("vireid ")
