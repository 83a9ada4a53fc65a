"""README's "Adding a rule", done as written on a copy of the package: one file, one registry entry, and every
generic rule test then runs on the new rule (ZO-Lion) and passes."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_blocks() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("**Adding a rule**"):text.index("<!-- /section:lab -->")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "README's 'Adding a rule' must show the rule file and the registry entry"
    return blocks[0], blocks[1]


def test_a_rule_added_as_readme_says_runs_every_generic_test(tmp_path):
    rule_file, registry_entry = readme_blocks()
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "zolab", copy / "zolab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "zolab" / "rules" / "lion.py").write_text(rule_file)
    registry = copy / "zolab" / "testing" / "rules.py"
    registry.write_text(registry.read_text() + "\n\n" + registry_entry)
    tests = ["tests/rules/test_generic.py", "tests/rules/test_transcription.py"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", *tests, "-k", "zo_lion"],
        cwd=copy, env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    passed = re.findall(r"^PASSED (\S+)", proc.stdout, re.M)
    assert not re.search(r"^(SKIPPED|FAILED|ERROR)", proc.stdout, re.M), out[-4000:]
    names = {re.sub(r"\[.*", "", p.split("::")[-1]) for p in passed}
    # every test of the two files that is parametrized by rule ran on ZO-Lion
    expected = {
        "test_lr_zero_leaves_parameters_bitwise_unchanged", "test_closure_that_raises_propagates_and_restores",
        "test_resume_from_state_dict_is_bitwise", "test_nonfinite_raise_names_step_and_losses",
        "test_nonfinite_skip_does_not_update_and_counts", "test_moment_rules_allocate_only_for_trainable_tensors",
        "test_bad_rule_options_raise", "test_bad_common_options_raise_for_every_rule",
        "test_batched_objective_gives_the_same_steps", "test_fused_update_equals_the_eager_torch_update",
        "test_a_step_of_several_blocks_updates_all_or_none", "test_every_rule_lowers_a_smooth_loss",
        "test_rule_matches_dense_transcription"}
    assert expected <= names, expected - names
    transcriptions = [p for p in passed if "test_rule_matches_dense_transcription" in p]
    assert len(transcriptions) >= 11, transcriptions  # its defaults and every common option
