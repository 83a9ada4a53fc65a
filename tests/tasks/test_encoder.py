"""EncoderClassifier: modes (head, full, LoRA), the zero-shot verbalizer head, the frozen-encoder cache, errors."""

import pytest
import torch

import zolab
from tests.tasks._tiny_encoder import LABEL_TEXTS, sentences, tiny_bert
from zolab.tasks.encoder import EncoderClassifier
from zolab.tasks.text import sst2_prompt


def batch(n=8, offset=0):
    return [sst2_prompt({"sentence": s, "label": y}) for s, y in sentences(n, offset)]


def task(mode="head", **kw):
    model, tok = tiny_bert(dropout=kw.pop("dropout", 0.0))
    return EncoderClassifier(model, tok, mode=mode, **kw)


def test_each_mode_trains_its_own_tensors():
    head = task("head")
    assert [n for n, _ in head.zo_named_parameters()] == ["head.weight", "head.bias"]
    full = task("full")
    names = [n for n, _ in full.zo_named_parameters()]
    encoder = [n for n, _ in full.encoder.named_parameters()]
    assert names == [f"encoder.{n}" for n in encoder] + ["head.weight", "head.bias"]
    assert full.encoder.pooler is None and not any("pooler" in n for n in names)  # unused by mean pooling
    lora = task("lora", lora_r=2)
    names = [n for n, _ in lora.zo_named_parameters()]
    assert names[-2:] == ["head.weight", "head.bias"]
    assert names[:-2] and all("lora_A" in n or "lora_B" in n for n in names[:-2])
    assert all(".query." in n or ".value." in n for n in names[:-2])
    # 2 layers x (query, value) x (A: 2x16, B: 16x2) + head 2x16 + 2
    assert sum(p.numel() for _, p in lora.zo_named_parameters()) == 2 * 2 * 64 + 34


def test_train_encoder_flag_still_works_and_conflicts_are_named():
    assert task(None, train_encoder=True).mode == "full"
    assert task(None, train_encoder=False).mode == "head"
    assert task(None).mode == "head"
    with pytest.raises(ValueError, match="train_encoder=True means mode='full' but mode='lora'"):
        task("lora", train_encoder=True)


@pytest.mark.parametrize("kw, message", [
    (dict(mode="adapter"), "mode='adapter'; allowed: \\['head', 'full', 'lora'\\]"),
    (dict(head_init="zeros"), "head_init='zeros'; allowed: \\['normal', 'verbalizer'\\]"),
    (dict(head_init="verbalizer", verbalizer=("bad",)), "verbalizer has 1 texts .* for num_classes=2"),
    (dict(head_scale=0.0), "head_scale=0.0; allowed: a number > 0"),
    (dict(mode="lora", lora_targets=("q_proj",)), "lora_targets \\['q_proj'\\] name no module"),
    (dict(mode="lora", lora_r=0), "lora_r=0; allowed: an integer >= 1"),
])
def test_bad_arguments_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        task(**kw)


def test_verbalizer_head_is_a_zero_shot_classifier_of_the_label_texts():
    t = task("head", head_init="verbalizer", head_scale=2.5)
    with torch.no_grad():
        rows = t._embed(list(LABEL_TEXTS))
        assert torch.allclose(t.head.weight.norm(dim=1), torch.full((2,), 2.5))
        assert torch.allclose(t.head.weight, 2.5 * rows / rows.norm(dim=1, keepdim=True))
        assert torch.equal(t.head.bias, torch.zeros(2))
        # each label text is classified as its own class: its logit is s·‖e‖, the other's s·cos·‖e‖
        examples = [sst2_prompt({"sentence": s, "label": c}) for c, s in enumerate(LABEL_TEXTS)]
        assert t.metrics(examples)["acc"] == 1.0


def test_normal_head_is_seeded_and_small():
    a, b, c = task(seed=1), task(seed=1), task(seed=2)
    assert torch.equal(a.head.weight, b.head.weight) and not torch.equal(a.head.weight, c.head.weight)
    assert a.head.weight.std() < 0.02


def test_frozen_head_mode_caches_eval_mode_embeddings():
    t = task("head", dropout=0.5).train()  # dropout on in the task; the frozen features must not see it
    examples = batch(6)
    first = t.embed([e.text for e in examples])
    with torch.no_grad():
        t.encoder.eval()
        direct = t._embed([e.text for e in examples])
    t.train()
    assert torch.equal(first, direct)
    assert len(t._cache) == 6 and t.encoder.training  # the task's mode is left as it was
    assert torch.equal(t.embed([e.text for e in examples]), first)


def test_lora_starts_at_the_frozen_model_and_zo_moves_only_adapter_and_head():
    lora, head = task("lora", head_init="verbalizer"), task("head", head_init="verbalizer")
    examples = batch(8)
    with torch.no_grad():
        assert torch.allclose(lora.loss(examples), head.loss(examples), atol=1e-6)  # B = 0 at the start
    trainable = dict(lora.zo_named_parameters())
    frozen = {n: p.detach().clone() for n, p in lora.named_parameters() if n not in trainable}
    start = {n: p.detach().clone() for n, p in trainable.items()}
    opt = zolab.ZOSGD(lora.zo_named_parameters(), lr=1e-2, mu=1e-3).bind(lora)
    with torch.no_grad():
        for _ in range(3):
            opt.step(lambda: lora.loss(examples))
    assert all(torch.equal(p, frozen[n]) for n, p in lora.named_parameters() if n in frozen)
    assert any(not torch.equal(p, start[n]) for n, p in trainable.items() if "lora_B" in n)


@pytest.mark.parametrize("mode, lr", [("full", 3e-3), ("lora", 0.2)])
@pytest.mark.slow
def test_zo_lowers_the_loss_in_the_trainable_modes(mode, lr):
    t = task(mode, head_init="verbalizer")
    examples = batch(8)
    opt = zolab.ZOSGD(t.zo_named_parameters(), lr=lr, mu=1e-3, num_queries=4).bind(t)
    with torch.no_grad():
        before = t.loss(examples).item()
        for _ in range(60):
            opt.step(lambda: t.loss(examples))
        after = t.loss(examples).item()
    assert after < before - 0.05, (before, after)


def test_eager_attention_by_default_gives_the_probes_hessian_vector_products():
    from diagnostics.linalg import HessianOperator

    t = task("lora", head_init="verbalizer")
    assert t.encoder.config._attn_implementation == "eager"
    examples = batch(4)
    H = HessianOperator(lambda: t.loss(examples), [p for _, p in t.zo_named_parameters()])
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(0))
    hv = H @ v
    assert hv.shape == v.shape and torch.isfinite(hv).all() and hv.abs().sum() > 0
    with pytest.raises(ValueError, match="attention='flash'; allowed: \\['eager', 'sdpa'\\]"):
        task(attention="flash")
