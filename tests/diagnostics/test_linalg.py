"""Hessian operator and estimators against closed forms (acceptance 2) and a digits MLP (acceptance 3)."""

import math

import pytest
import torch

from diagnostics.hessian import hessian_metrics
from diagnostics.linalg import (
    HessianOperator,
    entropy_rank,
    exact_hessian,
    hutchinson_diagonal,
    hutchinson_frobenius,
    hutchinson_trace,
    hutchinson_trace_frobenius,
    lanczos_top_k,
    power_iteration,
    spectrum_summary,
)
from zolab.tasks.toy import DigitsMLP, QuadraticForm

# A rotated quadratic with a known, indefinite spectrum: 39 values from 5 down to 0.5, and −0.5.
SPECTRUM = torch.cat([torch.linspace(5, 0.5, 39, dtype=torch.float64), torch.tensor([-0.5], dtype=torch.float64)])


def closed_form(lam: torch.Tensor) -> dict[str, float]:
    """Every §4 quantity written out from the eigenvalues."""
    op = lam.abs().max().item()
    p = lam.abs() / lam.abs().sum()
    return {
        "lambda_max": lam.max().item(),
        "op_norm": op,
        "trace": lam.sum().item(),
        "frobenius_sq": lam.square().sum().item(),
        "effective_rank": lam.sum().item() / op,
        "effective_rank_positive": lam.clamp(min=0).sum().item() / lam.max().item(),
        "stable_rank": lam.square().sum().item() / op**2,
        "entropy_rank": math.exp(-(p * p.log()).sum().item()),
    }


def operator(task):
    return HessianOperator(task.loss, list(task.parameters()))


def test_operator_matches_the_matrix_and_scipy():
    task = QuadraticForm(SPECTRUM.tolist(), seed=1)
    H = operator(task)
    v = torch.randn(40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(H @ v, task.hessian @ v)
    V = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(H @ V, task.hessian @ V)
    torch.testing.assert_close(torch.from_numpy(H.to_scipy() @ v.numpy()), task.hessian @ v)
    torch.testing.assert_close(exact_hessian(H), task.hessian)
    torch.testing.assert_close(H.gradient, task.gradient())
    assert task.x.grad is None  # the graph lives in the operator, never in p.grad


def test_linear_terms_and_unused_tensors_have_zero_curvature():
    a, b, c = (torch.ones(n, dtype=torch.float64, requires_grad=True) for n in (3, 2, 2))
    H = HessianOperator(lambda: (a**3).sum() + 2 * b.sum(), [a, b, c])  # c unused, b linear
    torch.testing.assert_close(exact_hessian(H), torch.diag(torch.tensor([6.0] * 3 + [0.0] * 4, dtype=torch.float64)))
    torch.testing.assert_close(H.gradient, torch.tensor([3.0] * 3 + [2.0] * 2 + [0.0] * 2, dtype=torch.float64))


def test_exact_path_matches_closed_forms_to_1e_6():
    metrics = hessian_metrics(operator(QuadraticForm(SPECTRUM.tolist(), seed=2)), "exact", 5000, 5, 1, 0)
    for key, value in closed_form(SPECTRUM).items():
        assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert [metrics[f"top/{i}"] for i in range(1, 6)] == pytest.approx(SPECTRUM[:5].tolist(), rel=1e-6)
    assert spectrum_summary(SPECTRUM)["lambda_min"] == -0.5


def test_stochastic_path_within_5_percent_with_fixed_seeds():
    metrics = hessian_metrics(operator(QuadraticForm(SPECTRUM.tolist(), seed=3)), "stochastic", 5000, 5, 400, 7)
    exact = closed_form(SPECTRUM)
    for key in ("lambda_max", "op_norm", "trace", "frobenius_sq", "effective_rank", "stable_rank"):
        assert metrics[key] == pytest.approx(exact[key], rel=0.05), key
    assert metrics["lambda_max"] == pytest.approx(5.0, rel=1e-6)  # Lanczos converges fully
    assert "entropy_rank" not in metrics  # needs the whole spectrum


def test_power_iteration_and_diagonal_estimator():
    task = QuadraticForm([4.0, -3.0, 1.0, 0.5], seed=4)
    lam, v = power_iteration(operator(task), torch.Generator().manual_seed(0), max_iters=500, tol=1e-12)
    assert float(lam) == pytest.approx(4.0, rel=1e-4)
    diag = hutchinson_diagonal(operator(task), 4000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(diag, task.hessian.diagonal(), atol=0.15, rtol=0)


def test_ranks_of_simple_spectra():
    assert entropy_rank(torch.ones(7)) == pytest.approx(7.0)
    assert entropy_rank(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    s = spectrum_summary(torch.tensor([2.0, 2.0, 0.0]))
    assert s["effective_rank"] == 2.0 and s["stable_rank"] == 2.0


@pytest.mark.slow
def test_digits_mlp_lanczos_and_hutchinson_agree_with_the_exact_spectrum():
    """Acceptance 3: ~2,000 parameters, briefly trained; top 5 within 2%, trace within 5%."""
    task = DigitsMLP(hidden=28, num_examples=64)
    params = list(task.parameters())
    assert 1900 <= sum(p.numel() for p in params) <= 2200
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        task.loss().backward()
        opt.step()
    for p in params:
        p.grad = None
    H = HessianOperator(task.loss, params)
    eig = torch.linalg.eigvalsh(exact_hessian(H)).flip(0)
    top = lanczos_top_k(H, 5, "LA", tol=1e-8)
    assert top.tolist() == pytest.approx(eig[:5].tolist(), rel=0.02)
    trace = hutchinson_trace(H, 300, torch.Generator().manual_seed(0))
    assert float(trace) == pytest.approx(float(eig.sum()), rel=0.05)
    fro = hutchinson_frobenius(H, 300, torch.Generator().manual_seed(1))
    assert float(fro) == pytest.approx(float(eig.square().sum()), rel=0.05)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda H: H @ torch.zeros(3), r"shape \(40,\)"),
        (lambda H: lanczos_top_k(H, 40), "k=40 must be < the dimension 40"),
        (lambda H: lanczos_top_k(H, 2, which="XX"), "unknown which 'XX'"),
        (lambda H: lanczos_top_k(H, 3, ncv=3), "invalid ncv: 3; allowed: an integer with k=3 < ncv <= d=40"),
        (lambda H: hutchinson_trace(H, 0, torch.Generator()), "num_samples: 0"),
        (lambda H: HessianOperator(lambda: torch.zeros(()), [torch.zeros(2)]), "requires_grad=True"),
        (lambda H: HessianOperator(lambda: torch.zeros(()), []), "at least one"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call(operator(QuadraticForm(SPECTRUM.tolist())))


def test_estimators_need_a_generator():
    with pytest.raises(TypeError, match="torch.Generator"):
        hutchinson_trace(operator(QuadraticForm([1.0, 2.0])), 10, 0)


def test_trace_and_frobenius_from_shared_products_equal_the_separate_estimates():
    H = operator(QuadraticForm([3.0, -1.0, 0.5, 2.0, 0.0]))
    trace, fro = hutchinson_trace_frobenius(H, 40, torch.Generator().manual_seed(3), batch_size=7)
    assert torch.equal(trace, hutchinson_trace(H, 40, torch.Generator().manual_seed(3), batch_size=7))
    assert torch.equal(fro, hutchinson_frobenius(H, 40, torch.Generator().manual_seed(3), batch_size=7))


def test_hessian_through_scaled_dot_product_attention():
    """Transformers call F.scaled_dot_product_attention, whose fused CPU kernel has no double backward: the
    operator builds its graph with the math kernel (MiniLM's HessianSpectrum failed without it)."""
    torch.manual_seed(0)
    x = torch.randn(2, 2, 5, 8)  # (batch, heads, tokens, features): the fused kernel's case
    w = torch.nn.Parameter(torch.randn(3, 8, 8) / 8**0.5)
    H = HessianOperator(lambda: _attention_loss(x, w), [w])
    with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.MATH]):
        dense = torch.autograd.functional.hessian(lambda flat: _attention_loss(x, flat.view(3, 8, 8)),
                                                  w.detach().reshape(-1))
    assert torch.allclose(exact_hessian(H), dense, atol=1e-5)


def _attention_loss(x, w):
    q, k, v = (x @ w[i] for i in range(3))
    return torch.nn.functional.scaled_dot_product_attention(q, k, v).square().mean()
