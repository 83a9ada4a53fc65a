"""Frozen-encoder sentence features computed once and cached on disk, keyed by a hash of everything they depend on.

A feature file holds the embeddings of a list of sentences (a data file's, in order) by one encoder. Its name
carries a content hash (``key``) of the encoder's files, the sentences, the pooling and the maximum length, so a
changed model or data file, or another pooling, is another file; hundreds of runs (a sweep, in one process or
many) share one. The file is written to a hidden temporary file beside its target, synced and renamed over it
(a crash leaves no half file under the real name); computing it holds an advisory lock (``<file>.lock``), so two
processes that need it at once compute it once. On load it is verified (format, key, shape, dtype, finite values
and a SHA-256 of the numbers); a damaged file is reported on stderr, recomputed and replaced.

Poolings (the encoder's last hidden states h, attention mask m):

- ``"mean"``: Σ m·h / Σ m (``EncoderClassifier``'s pooling);
- ``"mean-normalized"``: the mean, divided by its L2 norm (sentence-transformers' all-MiniLM-L6-v2 pipeline);
- ``"cls"``: the first token's state.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import sys
import time
import zipfile
from pathlib import Path

import torch

from zolab.tasks.models import MINILM, load_encoder, minilm_path

POOLINGS = ("mean", "mean-normalized", "cls")
FORMAT = "zolab-features-1"
_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256: a file is hashed once per process


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (memoised per process by path, size and modification time)."""
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        sha = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                sha.update(chunk)
        _DIGESTS[memo] = sha.hexdigest()
    return _DIGESTS[memo]


def folder_digest(folder: str | Path) -> str:
    """SHA-256 over a model folder's files (relative names and contents; hidden files and README.md left out)."""
    folder = Path(folder)
    sha = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel.startswith(".") or "/." in rel or path.name == "README.md":
            continue
        sha.update(f"{rel}\0{file_digest(path)}\n".encode())
    return sha.hexdigest()


def model_folder(model: str) -> Path:
    """The local transformers folder of ``model``: ``"all-minilm-l6-v2"`` (the packaged MiniLM) or a folder with a
    ``config.json``; anything else is a ValueError (features are keyed by the files' contents)."""
    if model == MINILM:
        return minilm_path()
    folder = Path(model).expanduser()
    if not (folder / "config.json").is_file():
        raise ValueError(f"model={model!r}; allowed: {MINILM!r} or a local transformers folder with a config.json "
                         "(cached features are keyed by the model's files)")
    return folder


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}; allowed: {list(POOLINGS)}")
    return pooling


def check_positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}; allowed: an integer >= 1")
    return value


@torch.no_grad()
def encode(model, tokenizer, texts: list[str], pooling: str = "mean", max_length: int = 128,
           batch_size: int = 256) -> torch.Tensor:
    """(len(texts), hidden) float32 sentence embeddings, the encoder in eval mode, no gradients, one pass; the texts
    are batched by length (less padding) and returned in their own order."""
    check_pooling(pooling)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), model.config.hidden_size)
    training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            enc = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            hidden = model(**enc).last_hidden_state.float()
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1)
                if pooling == "mean-normalized":
                    pooled = torch.nn.functional.normalize(pooled, dim=1)
            out[rows] = pooled
    finally:
        model.train(training)
    return out


def _checksum(features: torch.Tensor) -> str:
    return hashlib.sha256(features.contiguous().numpy().tobytes()).hexdigest()


def texts_digest(texts: list[str]) -> str:
    """SHA-256 of a list of sentences (each UTF-8, NUL-terminated: the list, not their concatenation)."""
    sha = hashlib.sha256()
    for text in texts:
        sha.update(text.encode("utf-8") + b"\0")
    return sha.hexdigest()


class FeatureCache:
    """Features of lists of sentences by ``model``, from ``cache_dir/features/`` or computed there once.

    Args: cache_dir (e.g. ``runs/.cache``), model (``"all-minilm-l6-v2"`` or a local folder), pooling,
    max_length (tokens; longer sentences are truncated), batch_size (sentences per encoder forward).
    """

    def __init__(self, cache_dir: str | Path, model: str = MINILM, pooling: str = "mean", max_length: int = 128,
                 batch_size: int = 256):
        self.cache_dir, self.model = Path(cache_dir), model
        self.pooling, self.max_length = check_pooling(pooling), check_positive("max_length", max_length)
        self.batch_size = check_positive("encode_batch_size", batch_size)
        self.folder = model_folder(model)
        self.last_seconds: float | None = None  # time of the last computation (None: loaded from the cache)

    def key(self, texts: list[str]) -> str:
        """The content hash naming the features of ``texts``."""
        spec = {"format": FORMAT, "model": folder_digest(self.folder), "texts": texts_digest(texts),
                "pooling": self.pooling, "max_length": self.max_length}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def path(self, texts: list[str], label: str) -> Path:
        """``cache_dir/features/<label>-<pooling><max_length>-<key[:16]>.pt``; ``label`` only helps a reader."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label) or "texts"
        return self.cache_dir / "features" / f"{safe}-{self.pooling}{self.max_length}-{self.key(texts)[:16]}.pt"

    def features(self, texts: list[str], label: str = "texts") -> torch.Tensor:
        """(len(texts), hidden) features of ``texts``: loaded and verified, or computed, stored and returned.
        ``label`` (e.g. ``"glue-sst2-train"``) names the file and the messages."""
        if not texts:
            raise ValueError(f"{label}: no sentences to encode")
        key, path = self.key(texts), self.path(texts, label)
        loaded, why = self._load(path, key, len(texts))
        if loaded is not None:
            self.last_seconds = None
            return loaded
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_name(path.name + ".lock")):
            loaded, why = self._load(path, key, len(texts))  # another process may have written it meanwhile
            if loaded is not None:
                self.last_seconds = None
                return loaded
            if why is not None:
                print(f"zolab: feature cache {path} is damaged ({why}): recomputing it", file=sys.stderr, flush=True)
            print(f"zolab: computing {self.model} features ({self.pooling}, max_length {self.max_length}) of "
                  f"{len(texts):,} sentences ({label}), once, into {path}", file=sys.stderr, flush=True)
            start, cpu = time.perf_counter(), time.process_time()
            model, tokenizer = load_encoder(str(self.folder))
            features = encode(model, tokenizer, texts, self.pooling, self.max_length, self.batch_size)
            self.last_seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            if not torch.isfinite(features).all():
                raise ValueError(f"{self.model}: non-finite features of {label}; nothing was cached")
            meta = {"model": str(self.folder), "label": label, "pooling": self.pooling,
                    "max_length": self.max_length, "rows": len(texts), "seconds": self.last_seconds, "cpu_seconds": cpu,
                    "threads": torch.get_num_threads()}
            _save_atomic({"format": FORMAT, "key": key, "meta": meta, "features": features,
                          "sha256": _checksum(features)}, path)
            print(f"zolab: {len(texts):,} features in {self.last_seconds:.1f} s, {cpu:.1f} CPU-s "
                  f"({torch.get_num_threads()} thread(s)): {path}", file=sys.stderr, flush=True)
            return features

    def _load(self, path: Path, key: str, rows: int) -> tuple[torch.Tensor | None, str | None]:
        """(features, None) from a sound file; (None, None) when there is none; (None, why) when it is damaged."""
        if not path.is_file():
            return None, None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
            return None, f"not loadable: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            return None, f"not a {FORMAT} file"
        if saved.get("key") != key:
            return None, "its key is not this model's, data's and settings'"
        features = saved.get("features")
        if not isinstance(features, torch.Tensor) or features.dtype != torch.float32 or features.ndim != 2 or (
                features.shape[0] != rows):
            return None, f"features of shape {getattr(features, 'shape', None)}, expected ({rows}, hidden) float32"
        if saved.get("sha256") != _checksum(features):
            return None, "its numbers do not match their SHA-256"
        return features, None


def _save_atomic(obj, path: Path) -> None:
    """``torch.save`` to a hidden temporary file beside ``path``, fsync, rename over ``path``."""
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(part, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock on ``path`` (blocking; released when the block ends or the process dies)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (two processes may both compute; the rename keeps the file whole)
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
