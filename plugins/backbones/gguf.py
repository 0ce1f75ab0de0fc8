"""The ``gguf`` backbone: a GGUF file (llama.cpp's format), dequantised into a trainable model.

``--backbones path/to/model.gguf`` (a local file) or ``--backbones org/repo::file.gguf`` (a file in
a hub repository).  ``transformers`` reads the file (``from_pretrained(folder, gguf_file=name)``, with
the ``gguf`` package: ``pip install "stmbench[gguf]"``): tokenizer and weights, dequantised.  The
dequantised model is written once, when the name is first resolved (planning), as an ordinary
safetensors checkpoint under the cache (``<cache>/gguf/<first 16 hex digits of the file's SHA-256>/``,
with ``stmbench-gguf.json``: the file's quantisation, read from its header once), so every run loads
that folder like any local checkpoint (through the ``hf`` backbone's loader and its in-memory weights
memo) instead of converting the file again.  Weights load in float32, or in bfloat16 on a CUDA device
that supports it.  The run's ``backbone_info.details`` records the file, its SHA-256, its
quantisation type and that the weights were dequantised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from stmbench import Backbone, BackboneInfo, hookimpl, hub_available, offline_reason, StmbenchError
from stmbench_plugins.backbones.hf import HFBackbone, info_from_config, load_pretrained, quiet_transformers

log = logging.getLogger(__name__)

SOURCE_RECORD = "stmbench-gguf.json"  # in the converted folder: the file's quantisation, read once
INSTALL = 'GGUF backbones need the gguf package: pip install "stmbench[gguf]"'
HUB_SEPARATOR = "::"


def is_gguf_name(name: str) -> bool:
    return name.lower().endswith(".gguf")


def require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise StmbenchError(INSTALL)


def locate(name: str) -> Path:
    """The local file behind ``name``: the path itself, or a hub file (from the cache, else
    downloaded; offline, a clear error at once)."""
    if HUB_SEPARATOR not in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise StmbenchError(f"backbone {name!r}: no such GGUF file")
        return path.resolve()
    repo, _, filename = name.partition(HUB_SEPARATOR)
    if not repo or not filename:
        raise StmbenchError(f"backbone {name!r}: write a hub GGUF file as org/repo::file.gguf")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, local_files_only=True))
    except Exception as cached_miss:  # noqa: BLE001 - any cache miss
        if not hub_available():
            raise StmbenchError(f"cannot load backbone {name!r}: {filename} of {repo} is not in the Hugging Face "
                                f"cache, and {offline_reason()}") from cached_miss
    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as exc:  # noqa: BLE001 - report the hub's reason
        raise StmbenchError(f"cannot download backbone {name!r}: {exc}") from exc


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of the file (remembered per process by path, size and modification time)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        sha = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                sha.update(block)
        _DIGESTS[key] = sha.hexdigest()
    return _DIGESTS[key]


def file_metadata(path: Path) -> dict[str, Any]:
    """The quantisation of the file, from its header: ``general.file_type`` as llama.cpp names it
    and the count of tensors per storage type."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    counts: dict[str, int] = {}
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        counts[kind] = counts.get(kind, 0) + 1
    out: dict[str, Any] = {"tensor_types": dict(sorted(counts.items()))}
    field = reader.fields.get("general.file_type")
    if field is not None:
        value = int(field.parts[field.data[0]][0])
        try:
            out["quantization"] = gguf.LlamaFileType(value).name.removeprefix("MOSTLY_")
        except ValueError:
            out["quantization"] = f"file type {value}"
    else:  # older files: the most common storage type of the weights
        out["quantization"] = max(counts, key=counts.get) if counts else "unknown"
    arch = reader.fields.get("general.architecture")
    if arch is not None:
        out["architecture"] = bytes(arch.parts[arch.data[0]]).decode("utf-8", "replace")
    return out


def converted_folder(path: Path, cache_dir: Path) -> Path:
    """The dequantised checkpoint of ``path`` under the cache, written once (atomically: a finished
    folder is renamed into place, so concurrent workers never read a half-written one)."""
    target = cache_dir / "gguf" / file_digest(path)[:16]
    if (target / "config.json").is_file():
        return target
    require_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantising %s into %s (once per file)", path, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        # the weights are plain float32 now: drop the marker that refuses to save a "quantised" model
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        del model
        meta = {"file": str(path), "file_sha256": file_digest(path), **file_metadata(path)}
        (tmp / SOURCE_RECORD).write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
        with contextlib.suppress(OSError):  # another worker got there first: keep theirs
            os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_dtype(device: str) -> Any:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


class GGUFBackbone(Backbone):
    name = "gguf"
    description = ("a GGUF file, local (path/to/model.gguf) or on the hub (org/repo::file.gguf), dequantised "
                   "once into a cached checkpoint (needs the gguf package)")

    def display_name(self, name: str) -> str:
        """The GGUF file's name (``SmolLM2-135M-Instruct.Q4_1.gguf``), for a path or a hub file."""
        return name.partition(HUB_SEPARATOR)[2] if HUB_SEPARATOR in name else Path(name).name

    def claims(self, name: str) -> bool:
        return is_gguf_name(name)

    def resolve(self, name: str, context: Any) -> BackboneInfo:
        """Converts the file on first sight (reading a GGUF header costs several seconds of its
        own; the runs need the converted checkpoint anyway), then reads the converted folder."""
        require_gguf()
        from transformers import AutoConfig

        path = locate(name)
        try:
            folder = converted_folder(path, context.cache_dir)
        except ValueError as exc:  # e.g. an architecture transformers cannot read from GGUF
            raise StmbenchError(f"backbone {name!r}: {exc}") from None
        record = folder / SOURCE_RECORD
        meta = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else file_metadata(path)
        with quiet_transformers():
            config = AutoConfig.from_pretrained(str(folder))
        info = info_from_config(name, config, backbone=self.name, source=str(path))
        details = {"file": str(path), "file_sha256": file_digest(path), "file_bytes": path.stat().st_size,
                   "quantization": meta["quantization"], "tensor_types": meta["tensor_types"],
                   "dequantized": True, "dtype": str(load_dtype(context.device)).removeprefix("torch.")}
        return dataclasses.replace(info, details=details)

    def empty_model(self, name: str, *, head: str, task: Any, context: Any) -> tuple[Any, Any]:
        """The converted checkpoint's model on the meta device (no weights read), as the ``hf``
        backbone builds it: the bill before a run counts its parameters without loading 0.5 GB of
        weights that the run then loads again."""
        require_gguf()
        folder = converted_folder(locate(name), context.cache_dir)
        return HFBackbone().empty_model(str(folder), head=head, task=task, context=context)

    def load(self, name: str, *, head: str, task: Any, context: Any, load_kwargs: dict[str, Any]) -> tuple[Any, Any]:
        require_gguf()
        folder = converted_folder(locate(name), context.cache_dir)
        kwargs = {"dtype": load_dtype(context.device), **load_kwargs}
        return load_pretrained(str(folder), head=head, task=task, context=context, load_kwargs=kwargs)


@hookimpl
def register_backbones(register):
    register(GGUFBackbone())
