"""Model cards of the packaged real models, measured by ``notebooks/model_cards.ipynb``.

The notebook writes ``results/model_cards/<model>.json``; ``card_markdown`` renders it.
"""
from __future__ import annotations

import time

import torch

FORMATS = {"card": "KEY_i = '<6 digits>', as the zoo's curriculum",
           "shifted": "other names, one per constant, six letter-and-digit values"}


@torch.no_grad()
def speed(model, ids: list[int], new_tokens: int, repeats: int = 2) -> dict:
    """Prefill seconds of ``ids`` and greedy decoding tokens/s after it (Hugging Face
    ``generate``, EOS ignored), each the best of ``repeats`` after one untimed call (one-off
    set-up). The prefill is the time ``generate`` takes for one new token (it runs the prompt and
    scores its last position only); decoding is the ``new_tokens - 1`` further tokens over the
    extra time ``generate`` takes for ``new_tokens``. (A plain forward scores every position:
    its output head over the whole prompt costs more than ``generate``'s prefill, and subtracting
    it overstates the decoding speed.)"""
    if new_tokens < 2:
        raise ValueError(f"new_tokens={new_tokens}: decoding speed needs at least 2 new tokens")
    x = torch.tensor([ids], device=next(model.parameters()).device)

    def seconds(n: int) -> float:
        t0 = time.perf_counter()
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False)
        assert out.shape[1] == len(ids) + n
        return time.perf_counter() - t0

    seconds(1)
    first, full = (min(seconds(n) for _ in range(repeats)) for n in (1, new_tokens))
    return {"prompt_tokens": len(ids), "prefill_s": first, "new_tokens": new_tokens,
            "decode_tokens_per_s": (new_tokens - 1) / (full - first)}


def card_markdown(record: dict) -> str:
    """The model card of a ``model_cards`` results record, as Markdown."""
    m, prov = record["metrics"], record["provenance"]
    ident = m["identity"]
    lines = [f"# {m['model']}", "", m["note"], ""]
    if "packages" in ident:
        pkgs = ", ".join(f"`{p}=={v}`" for p, v in ident["packages"].items())
        lines += [f"- Source: {pkgs} (package index; installed by `make venv` from "
                  "`requirements-nodeps.txt`).",
                  f"- GGUF sha256 `{ident['gguf_sha256']}`, quantization {ident['quantization']}, "
                  "dequantized to float32 once and cached (`tokenworks.models.packaged`).",
                  f"- License: {ident['license']}.", f"- Same model on the hub: `{m['hub_id']}`."]
    bpb = m["bits_per_byte"]
    lines += ["", "| held-out text | bits per byte | bytes scored |", "|---|---|---|"]
    lines += [f"| {k} | {v['bits_per_byte']:.3f} | {v['bytes']:,} |" for k, v in bpb.items()]
    lines += ["", "Retrieval probe: a constant defined about N tokens before the end of held-out "
              f"standard-library code, {m['probes'][0]['distractors']} distractor constants, "
              "then `assert NAME == '`; greedy decoding must continue with the value.", "",
              "| format | " + " | ".join(f"~{d:,} tokens" for d in m["probe_lengths"]) + " |",
              "|---|" + "---|" * len(m["probe_lengths"])]
    for fmt, what in FORMATS.items():
        acc = {p["distance"]: p for p in m["probes"] if p["format"] == fmt}
        lines.append(f"| {fmt} ({what}) | " + " | ".join(
            f"{acc[d]['accuracy']:.0%} of {acc[d]['n']}" for d in m["probe_lengths"]) + " |")
    s = m["speed"]
    lines += ["", f"Speed on {prov['device']}, {m['dtype']}: prefill of "
              f"{s['prompt_tokens']:,} tokens {s['prefill_s']:.2f} s; greedy decoding after it "
              f"{s['decode_tokens_per_s']:.1f} tokens/s (Hugging Face `generate`).", "",
              f"Measured by `notebooks/model_cards.ipynb` at commit `{prov.get('commit', '?')[:12]}`."]
    return "\n".join(lines) + "\n"
