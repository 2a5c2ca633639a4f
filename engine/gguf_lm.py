"""A causal LM and its tokenizer read from a GGUF file with transformers, kept converted.

transformers reads a GGUF file slowly (~45 s for SmolLM2-135M's on 2 cores: its metadata parsed
three times, the weights dequantized to float32). The first read saves the tokenizer and the
float32 LM it made as a Hugging Face folder in the user cache (``converted_lm_folder``: keyed by
the file's sha256 and the transformers version), which later reads load in about a second, with
the same weights, tokens and chat template. Saving it removes the folders of the same file that
older versions of transformers (or an older copy of the file) made, once unread for a month.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from engine.model_files import cache_dir
from engine.resources import sha256_file

#: Written last into a converted folder: the folder is complete (touched at every read).
CONVERTED_MARK = "expllm_converted.json"
#: A converted folder of an older transformers version (or file) unread this long is removed.
STALE_DAYS = 30


def import_transformers():
    """(torch, transformers), or an ImportError saying how to install them."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ImportError(
            f"local transformers LMs need torch, transformers and gguf ({exc}): "
            "pip install 'expllm[local]'"
        ) from exc
    return torch, transformers


def load_gguf_lm(gguf: Path):
    """(tokenizer, float32 LM) of the GGUF file ``gguf``, from its converted folder where one
    was made, else from the file (then saved as that folder; where the cache cannot be
    written, the next load reads the file again)."""
    torch, transformers = import_transformers()
    folder = converted_lm_folder(gguf)
    if (folder / CONVERTED_MARK).is_file():
        source, kwargs = folder, {}
        with contextlib.suppress(OSError):  # read now: not stale (``_remove_stale``)
            os.utime(folder / CONVERTED_MARK)
    else:
        source, kwargs = gguf.parent, {"gguf_file": gguf.name}
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source), **kwargs)
    lm = transformers.AutoModelForCausalLM.from_pretrained(
        str(source), dtype=torch.float32, **kwargs
    )
    if source != folder:
        with contextlib.suppress(OSError):  # a read-only cache: loads stay slow, that is all
            _save_converted(folder, tokenizer, lm, gguf)
    return tokenizer, lm


def converted_lm_folder(gguf: Path) -> Path:
    """Where the LM of ``gguf`` converted by this version of transformers is kept: the user
    cache's ``converted/<file name>-<sha256 prefix>-transformers-<version>``."""
    transformers = import_transformers()[1]
    name = f"{gguf.stem}-{sha256_file(gguf)[:16]}-transformers-{transformers.__version__}"
    return cache_dir() / "converted" / name


def _save_converted(folder: Path, tokenizer, lm, gguf: Path) -> None:
    """Save ``tokenizer`` and ``lm``'s weights into ``folder`` through a temporary folder beside
    it, so that a folder with the mark is always complete (a concurrent save may win the
    rename)."""
    transformers = import_transformers()[1]
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=folder.parent))
    try:  # a model read from GGUF counts as quantized and refuses to save: copy it first
        plain = transformers.AutoModelForCausalLM.from_config(lm.config, dtype=lm.dtype)
        plain.load_state_dict(lm.state_dict())
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / CONVERTED_MARK).write_text(json.dumps({"gguf": str(gguf)}), encoding="utf-8")
        if not folder.exists():
            staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _remove_stale(folder, gguf)


def _remove_stale(folder: Path, gguf: Path) -> None:
    """Remove the other converted folders of the file ``gguf`` (made by another version of
    transformers, or of the file before it changed; ~0.5 GB each) that no load has read for
    ``STALE_DAYS`` (another environment that still reads its own is left alone)."""
    unread_since = time.time() - STALE_DAYS * 86_400
    for other in folder.parent.glob(f"{gguf.stem}-*-transformers-*"):
        mark = other / CONVERTED_MARK
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if other == folder or mark.stat().st_mtime > unread_since:
                continue
            if json.loads(mark.read_text(encoding="utf-8")).get("gguf") == str(gguf):
                shutil.rmtree(other)
