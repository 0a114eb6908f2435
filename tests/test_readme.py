"""CI must run exactly the test command the README tells users to run."""

import re

from conftest import REPO


def _test_command(text: str) -> str:
    match = re.search(r"^(python -m pip install[^\n]*pytest[^\n]*)$", text, re.M)
    assert match, "no 'python -m pip install ... pytest' line found"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert _test_command(readme) == _test_command(ci)
