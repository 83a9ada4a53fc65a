"""Programs compiled as C (zolab/kernels/codegen.py) give the program VM's bits, for every instruction and rule."""

import pytest
import torch

from tests.kernels.test_program import assert_same_bits, every_op_program, run_every_op
from zolab.kernels import codegen
from zolab.testing import REGISTRY


@pytest.fixture
def vm_only(monkeypatch):
    """A context where no program is compiled (the VM runs everything)."""
    monkeypatch.setattr(codegen, "ENABLED", False)


def _compiled_everywhere(monkeypatch):
    monkeypatch.setattr(codegen, "ENABLED", True)
    monkeypatch.setattr(codegen, "MIN_NUMEL", 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_instruction_gives_the_vm_bits(monkeypatch, dtype):
    program = every_op_program()
    monkeypatch.setattr(codegen, "ENABLED", False)
    vm = run_every_op("c", dtype, program, n=5_003)
    _compiled_everywhere(monkeypatch)
    compiled = run_every_op("c", dtype, program, n=5_003)
    assert codegen._functions, "no program was compiled"
    for a, b in zip(vm, compiled):
        assert_same_bits(a, b)


def _run_rule(name, dtype):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(301, 7, dtype=dtype))
    b = torch.nn.Parameter(torch.randn(5, dtype=dtype))
    target = torch.randn(301, 7, dtype=dtype)
    opt = REGISTRY[name].make([("w", w), ("b", b)], lr=1e-2, mu=1e-3, weight_decay=0.01)
    if REGISTRY[name].needs_model:  # Forward-Grad's JVP differentiates through the module owning w and b
        model = torch.nn.Module()
        model.w, model.b = w, b
        opt.bind(model)

    def closure():
        return ((w - target) ** 2).sum() + (b**2).sum()

    for _ in range(3):
        opt.step(closure)
    state = [t.clone() for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor) and t.dim()]
    return [w.detach().clone(), b.detach().clone(), *state]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_rule_steps_to_the_vm_bits(monkeypatch, name, dtype):
    monkeypatch.setattr(codegen, "ENABLED", False)
    vm = _run_rule(name, dtype)
    _compiled_everywhere(monkeypatch)
    compiled = _run_rule(name, dtype)
    assert len(vm) == len(compiled) >= 2
    for a, b in zip(vm, compiled):
        assert_same_bits(a, b)


def test_small_runs_keep_the_vm(monkeypatch):
    monkeypatch.setattr(codegen, "ENABLED", True)
    assert codegen.compiled(every_op_program(), torch.float32, codegen.MIN_NUMEL - 1) is None
    assert codegen.compiled(every_op_program(), torch.float32, codegen.MIN_NUMEL) is not None
