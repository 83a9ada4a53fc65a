"""The frozen-encoder feature cache: computed once, reused, keyed by model/texts/settings, damage recomputed."""

import pytest
import torch

from tests.tasks._tiny_encoder import saved_bert, sentences, tiny_bert
from zolab.tasks import feature_cache
from zolab.tasks.encoder import EncoderClassifier
from zolab.tasks.feature_cache import FeatureCache, encode

TEXTS = [s for s, _ in sentences(40)]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return saved_bert(tmp_path_factory.mktemp("bert"))


def no_encoder(monkeypatch):
    """Loading the encoder now fails the test: the features must come from the cache."""
    def refuse(*args, **kwargs):
        raise AssertionError("the encoder was loaded: the features were recomputed")

    monkeypatch.setattr(feature_cache, "load_encoder", refuse)


def test_mean_features_are_the_encoder_classifiers_embeddings_in_text_order():
    model, tok = tiny_bert()
    texts = ["a b", *TEXTS[:9]]  # lengths differ: batches are made by length, rows come back in order
    got = encode(model, tok, texts, "mean", batch_size=3)
    with torch.no_grad():
        expected = EncoderClassifier(model, tok)._embed(texts, eval_mode=True)
    assert got.shape == (10, 16) and torch.allclose(got, expected, atol=1e-5)
    cls = encode(model, tok, texts, "cls")
    normalized = encode(model, tok, texts, "mean-normalized")
    assert torch.allclose(normalized, expected / expected.norm(dim=1, keepdim=True), atol=1e-5)
    assert not torch.allclose(cls, expected)


def test_computed_once_then_loaded(bert, tmp_path, monkeypatch, capsys):
    cache = FeatureCache(tmp_path, str(bert), batch_size=8)
    first = cache.features(TEXTS, "tiny-train")
    assert cache.last_seconds is not None and "computing" in capsys.readouterr().err
    path = cache.path(TEXTS, "tiny-train")
    assert path.parent == tmp_path / "features" and path.name.startswith("tiny-train-mean128-")
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".part")] == []  # written atomically
    no_encoder(monkeypatch)
    again = FeatureCache(tmp_path, str(bert), batch_size=8)
    second = again.features(TEXTS, "tiny-train")
    assert again.last_seconds is None and capsys.readouterr().err == ""
    assert torch.equal(first, second)


def test_the_key_follows_texts_settings_and_model_files(bert, tmp_path):
    cache = FeatureCache(tmp_path, str(bert))
    name = cache.path(TEXTS, "x").name
    assert cache.path(TEXTS[:-1], "x").name != name  # other sentences
    assert FeatureCache(tmp_path, str(bert), pooling="cls").path(TEXTS, "x").name != name
    assert FeatureCache(tmp_path, str(bert), max_length=8).path(TEXTS, "x").name != name
    assert FeatureCache(tmp_path, str(bert), batch_size=3).path(TEXTS, "x").name == name  # batching is not a key
    other = saved_bert(tmp_path / "other", seed=1)  # other weights, same file names
    assert FeatureCache(tmp_path, str(other)).path(TEXTS, "x").name != name


@pytest.mark.parametrize("damage, why", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not loadable"),
    (lambda p: p.write_bytes(b""), "not loadable"),
    (lambda p: torch.save({"x": 1}, p), "not a zolab-features-1 file"),
    ("numbers", "do not match their SHA-256"),
    ("key", "its key is not"),
])
def test_a_damaged_file_is_named_and_recomputed(bert, tmp_path, capsys, damage, why):
    cache = FeatureCache(tmp_path, str(bert))
    good = cache.features(TEXTS, "t")
    path = cache.path(TEXTS, "t")
    if damage in ("numbers", "key"):
        saved = torch.load(path, weights_only=True)
        if damage == "numbers":
            saved["features"][3, 2] += 1.0
        else:
            saved["key"] = "0" * 64
        torch.save(saved, path)
    else:
        damage(path)
    capsys.readouterr()
    again = FeatureCache(tmp_path, str(bert))
    assert torch.equal(again.features(TEXTS, "t"), good)
    err = capsys.readouterr().err
    assert f"feature cache {path} is damaged" in err and why in err and "recomputing" in err
    assert again.last_seconds is not None
    assert FeatureCache(tmp_path, str(bert))._load(path, cache.key(TEXTS), len(TEXTS))[1] is None  # sound again


def test_bad_settings_are_refused(bert, tmp_path):
    with pytest.raises(ValueError, match="pooling='max'; allowed: \\['mean', 'mean-normalized', 'cls'\\]"):
        FeatureCache(tmp_path, "all-minilm-l6-v2", pooling="max")
    with pytest.raises(ValueError, match="max_length=0; allowed: an integer >= 1"):
        FeatureCache(tmp_path, "all-minilm-l6-v2", max_length=0)
    with pytest.raises(ValueError, match="model='bert-base-uncased'; allowed: 'all-minilm-l6-v2' or a local"):
        FeatureCache(tmp_path, "bert-base-uncased")
    with pytest.raises(ValueError, match="no sentences to encode"):
        FeatureCache(tmp_path, str(bert)).features([], "empty")
