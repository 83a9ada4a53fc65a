"""benchmarks/step_cost.py: every registered rule is a row, ratios are taken inside each round, a tiny run works."""

import argparse
import json

import pytest
import torch

from benchmarks import step_cost
from zolab.rules import RULES, ZOSGD
from zolab.testing.rules import REGISTRY, RuleInfo, ref_sgd


class ZOFake(ZOSGD):
    """A rule registered only inside a test, with a constructor argument it cannot do without."""

    label = "ZO-Fake"

    def __init__(self, params, needed=None, **kwargs):
        if needed is None:
            raise ValueError("ZOFake needs 'needed'")
        super().__init__(params, **kwargs)


def test_every_registered_rule_is_a_row_and_builds(monkeypatch):
    monkeypatch.setitem(RULES, "zo_fake", ZOFake)  # registered as README's "Adding a rule" says
    monkeypatch.setitem(REGISTRY, "zo_fake", RuleInfo(ZOFake, ref_sgd, kwargs={"needed": 1}))
    names = step_cost.rule_names()
    assert set(RULES) <= set(names) and "zo_fake" in names and "zo_sgd:copy" in names
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    for name in names:
        key, kwargs = step_cost.rule_kwargs(name)
        opt = RULES[key](list(net.named_parameters()), **kwargs).bind(net)
        assert opt.defaults["lr"] == 1e-6 and step_cost.label(name).startswith("zolab ")
    assert step_cost.rule_kwargs("zo_adamu")[1]["total_steps"] == 100  # the table before the registry's
    assert step_cost.label("zo_fake") == "zolab ZO-Fake" and step_cost.label("zo_sgd:copy") == "zolab ZO-SGD (copy)"


def test_ratios_are_taken_inside_each_round(capsys):
    args = argparse.Namespace(device="cpu", model="tiny-llama", dtype="float32", batch=1, seq=8, steps=3,
                              threads=1, memory_repeats=2, cpu_memory="rss")
    secs = {step_cost.FORWARDS: [1.0, 2.0, 4.0], step_cost.MEZO: [1.5, 3.4, 6.0],
            "zo_sgd": [1.2, 2.4, 4.0], "meazo": [1.5, 3.0, 6.6]}  # meazo here: three forwards a step
    fwd = {step_cost.FORWARDS: [2] * 3, step_cost.MEZO: [2] * 3, "zo_sgd": [2] * 3, "meazo": [3] * 3}
    modes = {step_cost.FORWARDS: "-", step_cost.MEZO: "-", "zo_sgd": "module", "meazo": "copy"}
    mb = 2**20
    peaks = {step_cost.FORWARDS: [100 * mb, 200 * mb], step_cost.MEZO: [100 * mb, 200 * mb],
             "zo_sgd": [110 * mb, 230 * mb], "meazo": [150 * mb, 300 * mb]}
    result = step_cost.report(args, secs, fwd, modes, peaks, 1000, floors=[0.2, 0.3, 0.4])
    rows = {r["name"]: r for r in result["rows"]}
    assert rows["zo_sgd"]["ratio"] == rows["zo_sgd"]["ratio_own"] == pytest.approx({"median": 1.2, "min": 1.0,
                                                                                     "max": 1.2})
    assert rows[step_cost.MEZO]["ratio"] == pytest.approx({"median": 1.5, "min": 1.5, "max": 1.7})
    assert rows["meazo"]["ratio"] == pytest.approx({"median": 1.5, "min": 1.5, "max": 1.65})
    assert rows["meazo"]["ratio_own"] == pytest.approx(
        {"median": 1.0, "min": 1.0, "max": 1.1})  # 1.5 two-forwards' time for three forwards
    assert rows["zo_sgd"]["memory_ratio"] == pytest.approx({"median": 1.125, "min": 1.1, "max": 1.15})
    assert rows["zo_sgd"]["extra_mb"] == 20 and rows["meazo"]["extra_mb"] == 75
    assert result["two_forwards_s"] == {"median": 2.0, "min": 1.0, "max": 4.0}
    out = capsys.readouterr().out
    assert "| zolab MEAZO | 3 | copy | 1.50x [1.50, 1.65] | 1.00x [1.00, 1.10] | 1.50 [1.50, 1.50] | +75 |" in out
    assert "| zolab ZO-SGD | 2 | module | 1.20x [1.00, 1.20] | 1.20x [1.00, 1.20] | 1.12 [1.10, 1.15] | +20 |" in out
    assert "rules above 1.10x of their own forwards (median): zolab ZO-SGD\n" in out
    assert result["draw_floor"] == pytest.approx({"median": 0.15, "min": 0.1, "max": 0.2})  # in-round ratios
    assert "0.15x [0.10, 0.20] of two forwards; a step that draws each number once after two forwards costs at " \
           "least 1.15x of them" in out


def test_a_tiny_run_prints_and_writes_every_row(tmp_path, capsys):
    path = tmp_path / "cost.json"
    step_cost.main(["--model", "tiny-llama", "--batch", "1", "--seq", "8", "--steps", "2", "--threads", "1",
                    "--rules", "zo_sgd,zo_sgd:copy", "--memory-repeats", "1", "--json", str(path)])
    result = json.loads(path.read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == [step_cost.FORWARDS, step_cost.MEZO, "zo_sgd", "zo_sgd:copy"]
    assert rows["zo_sgd"]["perturb"] == "module" and rows["zo_sgd:copy"]["perturb"] == "copy"
    for row in rows.values():
        assert row["forwards_per_round"] == [2, 2] and len(row["seconds"]) == 2 and len(row["peaks"]) == 1
        assert row["ratio"]["min"] > 0 and row["memory_ratio"]["median"] > 0.5
    assert "| zolab ZO-SGD (copy) | 2 | copy |" in capsys.readouterr().out
    assert result["draw_floor"]["min"] > 0  # timed in both rounds


def test_half_state_rows_for_rules_with_state():
    names = step_cost.rule_names("bfloat16")
    assert {"radazo:bfloat16", "zo_adamm:bfloat16", "zo_adamu:bfloat16"} <= set(names)
    assert "zo_sgd:bfloat16" not in names and "radazo:bfloat16" not in step_cost.rule_names()
    assert "zo_adamu:float16" in step_cost.rule_names("float16")  # first moments only
    assert "radazo:float16" not in step_cost.rule_names("float16")  # refused for second moments
    assert "mezo_svrg:bfloat16" not in names  # its state is the anchor point: float32 only


@pytest.mark.parametrize("state_dtype", ["bfloat16", "float16"])
def test_every_half_state_row_builds(state_dtype):
    """A row step_cost lists is one its rule accepts (a refused one would stop a whole memory run)."""
    for name in step_cost.rule_names(state_dtype):
        key, kwargs = step_cost.rule_kwargs(name)
        W = torch.nn.Parameter(torch.randn(4, 6))
        step_cost.RULES[key]([("W", W)], **kwargs)
    key, kwargs = step_cost.rule_kwargs("radazo:bfloat16")
    assert key == "radazo" and kwargs["state_dtype"] == "bfloat16"
    assert step_cost.label("radazo:bfloat16") == "zolab R-AdaZO (bfloat16)"


@pytest.mark.slow
def test_a_memory_only_run_with_half_state(tmp_path, capsys):
    path = tmp_path / "memory.json"
    step_cost.main(["--model", "tiny-llama", "--batch", "1", "--seq", "8", "--steps", "0", "--threads", "1",
                    "--rules", "radazo", "--state-dtype", "bfloat16", "--memory-repeats", "1", "--json", str(path)])
    rows = {r["name"]: r for r in json.loads(path.read_text())["rows"]}
    assert list(rows) == [step_cost.FORWARDS, step_cost.MEZO, "radazo", "radazo:bfloat16"]
    for row in rows.values():
        assert row["seconds"] == [] and len(row["peaks"]) == 1 and row["memory_ratio"]["median"] > 0.5
    assert "| zolab R-AdaZO (bfloat16) | - | - | - | - |" in capsys.readouterr().out


def test_cpu_memory_counts_live_tensor_bytes_the_same_every_time(capsys):
    # R-AdaZO keeps m and v: 2 x d float32 numbers more than ZO-SGD at its peak, and the count repeats exactly
    args = argparse.Namespace(device="cpu", model="tiny-llama", dtype="float32", batch=1, seq=8, threads=1,
                              cpu_memory="tensors")

    def peak(name):
        step_cost.memory_of(args, [name])
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["peaks"][name]

    sgd, radazo, again = peak("zo_sgd"), peak("radazo"), peak("zo_sgd")
    _, d, _ = step_cost.build_methods(args, [])
    assert sgd == again and radazo - sgd == pytest.approx(2 * d * 4, rel=1e-3)


def test_rss_memory_measures_every_method_it_is_given(capsys):
    """The RSS path (and CUDA's) runs the methods one after another in one process: a peak for each name."""
    args = argparse.Namespace(device="cpu", model="tiny-llama", dtype="float32", batch=1, seq=8, threads=1,
                              cpu_memory="rss")
    step_cost.memory_of(args, ["zo_sgd", "meazo"])
    peaks = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["peaks"]
    assert set(peaks) == {"zo_sgd", "meazo"} and all(v > 0 for v in peaks.values())
