"""Train the model zoo from the CPython standard library: tokenizers, models, model cards.

    python reproduce/train_zoo.py                       # every model (make models)
    python reproduce/train_zoo.py --models tw-micro     # one model
    python reproduce/train_zoo.py --models tw-code --resume   # continue from zoo/tw-code
    python reproduce/train_zoo.py --models tw-code --minutes 6  # fit the schedule into 6 min

Runs on CUDA when present (rows built by CPU worker processes), else the CPU. Seeds are
fixed; with the same device, worker count and step count a run is repeatable. ``--minutes``
times the first steps and scales every stage's step count down so the run fits; the card
records the scale and the stages it ran, and ``--set 'stages=<the card's stages>'`` repeats
it. Each model is written to zoo/<name>/ with `save_pretrained` (float16 safetensors) beside
its tokenizer and a model card (model_card.json, README.md).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoTokenizer, LlamaForCausalLM

from tokenworks.models.corpus import load_corpus, save_corpus, stdlib_corpus
from tokenworks.models import TOKENIZERS, ZOO, ZOO_DIR, load_weights, zoo_config
from tokenworks.results import provenance
from tokenworks.decoding.arith import SPLIT_SEEDS, SPLIT_SIZES, problems, split, training_text
from tokenworks.models.zoo import (arith_accuracy, arith_rows, bits_per_byte, copy_probe, retrieval_probe,
                            train_tokenizer, training_rows)

# Training schedule per model: stages of (sequence length, batch rows, steps). The long
# stage at the full context is what makes retrieval at ~1,900 tokens possible.
TRAIN = {
    "tw-micro": dict(stages=[(256, 8, 300)], lr=3e-3, retrieval_rate=0.0),
    "tw-code-draft": dict(stages=[(2048, 32, 2500)], lr=3e-3, retrieval_rate=0.5,
                          repeat_rate=0.5, warmup=200),
    "tw-code-v2": dict(stages=[(2048, 32, 2500)], lr=3e-3, retrieval_rate=0.5, repeat_rate=0.5,
                       warmup=200),
    # The committed tw-code is a chain of resumed GPU runs (its card's training.previous,
    # newest first); this is that chain as one run (about 19 min on an H100), not run as such.
    # Its last stage at 3072 tokens is what took retrieval at ~1,900 tokens from 80% to 100%;
    # a further stage back at 2048 lost it again.
    "tw-code": dict(stages=[(2048, 32, 28000), (3072, 21, 10000)], lr=2e-3, retrieval_rate=0.8,
                    repeat_rate=0.5, early=0.5, same_stem=0.5, warmup=200),
}
# tw-arith: trained on an endless stream of fresh problems that skips the validation and test
# questions; training stops at the first evaluation where greedy accuracy on the validation
# problems reaches `target_accuracy`, so that the model is right often but not always
# (CNTP only matters where the model is uncertain). The test problems are never used to stop.
TRAIN["tw-arith"] = dict(stages=[(256, 64, 6000)], lr=3e-3, warmup=100, retrieval_rate=0.0,
                         data="arith", target_accuracy=0.6, eval_every=100)
TIMING_STEPS = 40  # steps timed before --minutes rescales the schedule
PROBE_DISTANCES = (1000, 1900)


def get_tokenizer(folder: str, corpus, rebuild: bool):
    path = ZOO_DIR / folder
    if rebuild or not (path / "tokenizer.json").exists():
        if folder == "tokenizer-arith":
            texts = [training_text(p) for p in problems(20000, seed=SPLIT_SEEDS["tokenizer"])]
            tok = train_tokenizer(texts, TOKENIZERS[folder], split_digits=True)
        else:
            tok = train_tokenizer(corpus.texts("train"), TOKENIZERS[folder])
        tok.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


SPEC_KEYS = {"stages", "lr", "warmup", "retrieval_rate", "repeat_rate", "early", "same_stem", "data",
             "target_accuracy", "eval_every"}


def parse_overrides(items: list[str], name: str) -> dict:
    """``KEY=JSON`` strings -> a dict of training-spec overrides, checked."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in SPEC_KEYS:
            raise SystemExit(f"--set {item!r}: write KEY=JSON with KEY one of {', '.join(sorted(SPEC_KEYS))}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            raise SystemExit(f"--set {item!r}: the value must be JSON (numbers as 0.8, lists as "
                             "[[2048,32,800]], strings quoted)") from None
    if "data" in out and out["data"] != TRAIN[name].get("data"):
        raise SystemExit(f"--set data=...: {name}'s data source is fixed by its tokenizer")
    return out


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def fixed_rows(texts: list[str], tokenizer, seq_len: int, n: int) -> torch.Tensor:
    """The first ``n`` windows of ``seq_len + 1`` tokens of ``texts`` packed with EOS."""
    ids = [i for t in texts for i in tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]]
    return torch.tensor(ids[: n * (seq_len + 1)]).view(n, seq_len + 1)


@torch.no_grad()
def held_out_loss(model, rows: torch.Tensor) -> float:
    """Mean next-token loss (nats) on ``rows``, in the training precision."""
    model.eval()
    device = next(model.parameters()).device
    x = rows.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(x[:, :-1]).logits
    model.train()
    return round(torch.nn.functional.cross_entropy(logits.float().flatten(0, 1),
                                                   x[:, 1:].flatten()).item(), 4)


class Rows(torch.utils.data.IterableDataset):
    """``training_rows`` as a data set; each DataLoader worker draws from its own seed."""

    def __init__(self, ids_by_doc, texts, tokenizer, seq_len: int, seed: str, **options):
        self.args, self.seed, self.options = (ids_by_doc, texts, tokenizer, seq_len), seed, options

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = random.Random(f"{self.seed}/{info.id if info else 0}")
        for row in training_rows(*self.args, rng, **self.options):
            yield torch.tensor(row)


def train(name: str, corpus, tokenizer, device: torch.device, resume: bool, scale: float,
          minutes: float | None = None, workers: int = 0, overrides: dict | None = None,
          out_dir: Path = ZOO_DIR) -> dict:
    spec = dict(TRAIN[name], **(overrides or {}))
    torch.manual_seed(0)
    rng = random.Random(0)
    out = out_dir / name
    if resume:
        model = LlamaForCausalLM.from_pretrained(ZOO_DIR / name, dtype=torch.float32)
        previous = json.loads((ZOO_DIR / name / "model_card.json").read_text())
    else:
        model = LlamaForCausalLM(zoo_config(name, tokenizer))
        previous = None
    model.to(device).train()
    arith = spec.get("data") == "arith"
    texts = corpus.texts("train")
    ids_by_doc = None if arith else tokenizer(texts)["input_ids"]
    held_out = {p["question"] for name in SPLIT_SIZES for p in split(name)} if arith else set()
    stopped_at = None
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], betas=(0.9, 0.95),
                            weight_decay=0.1, fused=device.type == "cuda")
    stages = [(s, b, max(1, int(n * scale))) for s, b, n in spec["stages"]]
    total = sum(n for _, _, n in stages)
    history, validation, step, tokens, t0 = [], [], 0, 0, time.time()
    val_texts = [training_text(p) for p in split("validation")] if arith else corpus.texts("validation")
    val_rows = fixed_rows(val_texts, tokenizer, max(s for s, _, _ in stages), 8)
    bar = tqdm(total=total, desc=name, file=sys.stdout, mininterval=10)
    options = dict(retrieval_rate=spec["retrieval_rate"], repeat_rate=spec.get("repeat_rate", 0.0),
                   early=spec.get("early", 0.0), same_stem=spec.get("same_stem", 0.0))
    for k, (seq_len, batch, n_steps) in enumerate(stages):
        if workers and not arith:
            loader = torch.utils.data.DataLoader(
                Rows(ids_by_doc, texts, tokenizer, seq_len, f"{name}/{k}", **options),
                batch_size=batch, num_workers=workers, pin_memory=True, prefetch_factor=8)
            batches = iter(loader)
        else:
            rows = (arith_rows(tokenizer, seq_len, rng, held_out) if arith else
                    training_rows(ids_by_doc, texts, tokenizer, seq_len, rng, **options))
            batches = (torch.tensor([next(rows) for _ in range(batch)]) for _ in iter(int, 1))
        stage_end = sum(n for _, _, n in stages[:k + 1])
        while step < stage_end:
            x = next(batches).to(device, non_blocking=True)
            if step == 5:
                t_timing = time.time()
            if minutes and step == TIMING_STEPS and k == 0:  # fit the schedule into `minutes`
                per_step = (time.time() - t_timing) / (step - 5)
                fits = step + 0.9 * (minutes * 60 - (time.time() - t0)) / per_step
                factor = min(1.0, fits / total)
                stages = [(s, b, max(1, int(n * factor))) for s, b, n in stages]
                scale *= factor
                total, stage_end = sum(n for _, _, n in stages), stages[0][2]
                bar.total = total
                print(f"--minutes {minutes}: {per_step * 1000:.0f} ms/step, {total} steps "
                      f"(scale {scale:.4f})", flush=True)
            if step % 500 == 0 and not arith:  # tw-arith logs its own, with accuracy
                validation.append((step, held_out_loss(model, val_rows)))
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, spec["lr"], spec.get("warmup", 50))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(x[:, :-1]).logits  # [batch, seq_len, vocab]
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            tokens += x[:, :-1].numel()
            history.append((step, round(loss.item(), 4), seq_len))
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", seq=seq_len)
            if arith and step % spec["eval_every"] == 0:
                model.eval()
                acc = arith_accuracy(model, tokenizer, split("validation"))["accuracy"]
                model.train()
                validation.append((step, held_out_loss(model, val_rows), acc))
                print(f"step {step}: validation accuracy {acc:.1%}", flush=True)
                if acc >= spec["target_accuracy"]:
                    stopped_at = step
                    break
        if stopped_at:
            break
    bar.close()
    if not arith:
        validation.append((step, held_out_loss(model, val_rows)))
    seconds = time.time() - t0
    model = model.to(torch.float16).to(torch.float32).eval()  # evaluate what is committed
    card = evaluate(name, model, tokenizer, corpus, device)
    card.update(
        name=name, architecture="LlamaForCausalLM", config=model.config.to_diff_dict(),
        parameters=sum(p.numel() for p in model.parameters()),
        training=dict(spec, stages=stages, steps=step, scale=round(scale, 6),
                      optimizer="AdamW(0.9, 0.95), wd 0.1", data_workers=0 if arith else workers,
                      precision="bf16 autocast" if device.type == "cuda" else "fp32",
                      fim="none" if arith else "SantaCoder-style, 50% of documents, PSM/SPM 50/50",
                      curriculum=" ".join(c for c, on in [(CURRICULUM, spec["retrieval_rate"]),
                                                          (LONG_RANGE.format(spec.get("early", 0),
                                                                             spec.get("same_stem", 0)),
                                                           spec.get("early") or spec.get("same_stem")),
                                                          (REPETITION.format(spec.get("repeat_rate", 0)),
                                                           spec.get("repeat_rate"))]
                                          if on) or "none",
                      tokens_this_run=tokens, seconds=round(seconds, 1),
                      overrides=overrides or None,
                      resumed_from=previous["provenance"]["commit"] if previous else None,
                      previous=previous["training"] if previous else None,
                      tokens_seen_total=tokens + (previous["training"]["tokens_seen_total"] if previous else 0),
                      loss_history=history[:: max(1, len(history) // 400)],
                      validation_loss=validation, stopped_at=stopped_at),
        corpus=corpus.summary(), tokenizer=ZOO[name]["tokenizer"], provenance=provenance())
    model.to(torch.float16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "model_card.json").write_text(json.dumps(card, indent=1))
    (out / "README.md").write_text(model_card_markdown(card))
    return card


CURRICULUM = ("retrieval rows: concatenated training files with 1-8 synthetic constants "
              "`NAME_k = 'value'` (names from 18 stems x 100 suffixes, digit/hex/letter values) "
              "in the first 60% of lines, each used 1-2 times later, half of the uses in the last "
              "tenth of the row (assert ==, assertEqual, if !=, print comment, check()). The "
              "probes use held-out files and fresh values.")
LONG_RANGE = ("Of the definitions, {:.0%} go in the first 5% of the row's lines instead; in "
              "{:.0%} of the retrieval rows all constants share one name stem (KEY_3, KEY_71).")
REPETITION = ("Span repetition: in {:.0%} of the plain rows, 1-4 spans of 8-64 of the "
              "row's own tokens are copied over later positions of the row.")


def evaluate(name, model, tokenizer, corpus, device) -> dict:
    if TRAIN[name].get("data") == "arith":  # bits/byte of held-out problem text, and accuracy
        splits = {s: split(s) for s in SPLIT_SIZES}
        card = {s: bits_per_byte(model, tokenizer, [training_text(p) for p in ps], 256)
                for s, ps in splits.items()}
        card["arith_accuracy"] = {s: arith_accuracy(model, tokenizer, ps) for s, ps in splits.items()}
        return card
    card = {"validation": bits_per_byte(model, tokenizer, corpus.texts("validation"), 512),
            "test": bits_per_byte(model, tokenizer, corpus.texts("test"), 512)}
    if name != "tw-micro":
        card["retrieval_probes"] = [retrieval_probe(model, tokenizer, corpus.texts("test"), d, shifted=s)
                                    for s in (False, True) for d in PROBE_DISTANCES]
        card["copy_probe"] = copy_probe(model, tokenizer, corpus.texts("test"))
        prompt = corpus.texts("test")[3][:400]
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=80, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        card["greedy_sample"] = {"prompt": prompt, "completion": tokenizer.decode(gen[0, ids.shape[1]:])}
    return card


def install(name: str, folder: Path, corpus, device: torch.device) -> dict:
    """Install weights trained elsewhere (a GPU lease): ``folder`` holds the
    ``model.safetensors`` and ``model_card.json`` that training wrote there. The checkpoint is
    saved again with this machine's pinned transformers beside the zoo tokenizer, and the
    card's measurements are re-taken here (``reevaluate``), so the card's numbers are the
    ones the tests re-check on this machine; training facts and provenance stay as written."""
    tokenizer = AutoTokenizer.from_pretrained(ZOO_DIR / ZOO[name]["tokenizer"])
    model = load_weights(name, folder / "model.safetensors", tokenizer)
    out = ZOO_DIR / name
    model.to(torch.float16).save_pretrained(out)
    if not (out / "tokenizer.json").exists():
        tokenizer.save_pretrained(out)
    (out / "model_card.json").write_text((folder / "model_card.json").read_text())
    return reevaluate(name, corpus, device)


def reevaluate(name: str, corpus, device: torch.device) -> dict:
    """Re-measure a committed checkpoint and rewrite the measured parts of its card."""
    path = ZOO_DIR / name
    card = json.loads((path / "model_card.json").read_text())
    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    card.update(evaluate(name, model, AutoTokenizer.from_pretrained(path), corpus, device))
    card["evaluated"] = provenance()
    (path / "model_card.json").write_text(json.dumps(card, indent=1))
    (path / "README.md").write_text(model_card_markdown(card))
    return card


def model_card_markdown(card: dict) -> str:
    t = card["training"]
    lines = [f"# {card['name']}", "",
             f"LlamaForCausalLM, {card['parameters'] / 1e6:.2f}M parameters, "
             f"tokenizer `{card['tokenizer']}` ({card['config']['vocab_size']} ids), "
             f"context {card['config']['max_position_embeddings']}.", "",
             f"- Trained on {t['tokens_seen_total'] / 1e6:.1f}M tokens of "
             + ("fresh arithmetic word problems (`tokenworks.decoding.arith`; validation and test "
                "questions excluded)" if t.get("data") == "arith" else
                f"the CPython {card['corpus']['python']} standard library (corpus sha256 "
                f"`{card['corpus']['sha256'][:16]}…`)")
             + f", {t['seconds'] / 60:.1f} min on "
             f"{card['provenance']['device']}; stages (seq, batch, steps): {t['stages']}.",
             f"- Fill-in-the-middle: {t['fim']}.", f"- Curriculum: {t['curriculum'].rstrip('.')}.",
             f"- Validation: {card['validation']['bits_per_byte']:.3f} bits/byte; "  # of held-out text
             f"test: {card['test']['bits_per_byte']:.3f} bits/byte "
             f"({card['test']['nats_per_token']:.3f} nats/token).", ""]
    for p in card.get("retrieval_probes", []):
        fmt = {"card": "the curriculum's format, KEY_i = '<6 digits>'",
               "shifted": "a shifted format: other names, one per constant, letter-and-digit values"}
        lines.append(f"- Retrieval probe at ~{p['distance']} tokens ({p['distractors']} distractors; "
                     f"{fmt[p.get('format', 'card')]}): {p['accuracy']:.0%} of {p['n']}.")
    if {p.get("format") for p in card.get("retrieval_probes", [])} == {"card", "shifted"}:
        lines.append("- What the probes show: the first format is the one the curriculum trained on; "
                     "the shifted one tests in-context retrieval itself. Where they differ, the model "
                     "learned the format, not retrieval.")
    if "arith_accuracy" in card:
        a = card["arith_accuracy"]
        lines.append(f"- Greedy accuracy on held-out problems: validation {a['validation']['accuracy']:.1%} "
                     f"of {a['validation']['n']}, test {a['test']['accuracy']:.1%} of {a['test']['n']} "
                     + (f"(training stopped at step {t['stopped_at']}: the first evaluation with "
                        f"validation accuracy >= {t['target_accuracy']:.0%})." if t.get("stopped_at")
                        else f"(the full schedule ran without reaching {t['target_accuracy']:.0%} "
                             "on validation)."))
    if "copy_probe" in card:
        c = card["copy_probe"]
        lines.append(f"- Copy probe (a {c['span']}-token span repeated after {c['gap']} tokens; "
                     f"nats/token, first copy -> second copy): held-out code "
                     f"{c['code']['first_copy']:.2f} -> {c['code']['second_copy']:.2f}, random ids "
                     f"{c['random']['first_copy']:.2f} -> {c['random']['second_copy']:.2f}.")
    if "greedy_sample" in card:
        lines += ["", "Greedy continuation of held-out code:", "", "```python",
                  card["greedy_sample"]["prompt"] + "⟨model⟩" + card["greedy_sample"]["completion"],
                  "```"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(TRAIN), choices=list(TRAIN))
    ap.add_argument("--resume", action="store_true", help="continue from the committed weights")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps")
    ap.add_argument("--corpus", type=Path, help="corpus JSON (to train where Python differs)")
    ap.add_argument("--save-corpus", type=Path, help="write the corpus JSON and exit")
    ap.add_argument("--rebuild-tokenizers", action="store_true")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="re-measure the committed checkpoints and rewrite their cards")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=JSON",
                    help="override the training spec, e.g. retrieval_rate=0.6 'stages=[[2048,32,800]]'")
    ap.add_argument("--out-dir", type=Path, default=ZOO_DIR, help="write models here (default zoo/)")
    ap.add_argument("--install", type=Path, metavar="DIR",
                    help="install weights trained elsewhere from DIR/<model>/ (see install())")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    ap.add_argument("--minutes", type=float, help="scale the schedule down to fit this many minutes")
    ap.add_argument("--workers", type=int, default=None,
                    help="data worker processes (default: CPU count - 2 on CUDA, 0 on the CPU)")
    args = ap.parse_args(argv)
    for name in args.models:  # bad --set items fail before any work
        parse_overrides(args.set, name)
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = load_corpus(args.corpus) if args.corpus else stdlib_corpus()
    if args.save_corpus:
        save_corpus(corpus, args.save_corpus)
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"corpus {corpus.summary()} on {device}", flush=True)
    for name in args.models:
        if args.install:
            card = install(name, args.install / name, corpus, device)
        elif args.evaluate_only:
            card = reevaluate(name, corpus, device)
        else:
            tok = get_tokenizer(ZOO[name]["tokenizer"], corpus, args.rebuild_tokenizers)
            workers = args.workers
            if workers is None:
                workers = max(1, (os.cpu_count() or 3) - 2) if device.type == "cuda" else 0
            overrides = parse_overrides(args.set, name)
            card = train(name, corpus, tok, device, args.resume, args.scale, args.minutes, workers,
                         overrides, args.out_dir)
        probes = {(p.get("format", "card"), p["distance"]): p["accuracy"] for p in card.get("retrieval_probes", [])}
        print(f"{name}: test {card['test']['bits_per_byte']:.3f} bits/byte, probes {probes}",
              flush=True)


if __name__ == "__main__":
    main()
