"""The byte-level probability experiments (notebooks/bytelevel.ipynb); the method is
in ``tokenworks.bytelevel``.

1. Fill-in-the-middle with prompts that end inside a token (the paper's random-span
   infilling, on held-out stdlib functions): token-level greedy decoding, token healing and
   byte-level greedy decoding, in PSM and SPM formats (the zoo's FIM formats: ``tokenworks.models.zoo``).
   In SPM the prefix and the middle form one tokenized segment, so a prefix cut inside a token
   ends on a token the model never saw there; in PSM the middle starts a fresh segment after
   the middle sentinel, so PSM is the control.
2. Bits per byte of one model, another with a different tokenizer, and their byte-level
   ensemble, by the byte chain rule.
3. The genlm-bytes peer (Vieira et al. 2025) on the same model and bytes.
"""
from __future__ import annotations

import ast
import asyncio
import copy
import math
import random
import textwrap
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm import tqdm
from transformers import DynamicCache

from tokenworks.bytelevel.bytelm import END, ByteLM
from tokenworks.bytelevel.ensemble import ByteEnsemble
from tokenworks.stats import bootstrap
from tokenworks.verdicts import Claim
from tokenworks.models.corpus import function_nodes
from tokenworks.models.zoo import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

FORMATS = ("psm", "spm")
ARMS = ("token", "healing", "byte", "ensemble")
FIM_PROXY = "edit similarity of the middle, every method stopped at the true middle's length, in place of pass rate"


def functions(text: str, min_bytes: int = 150, max_bytes: int = 1000) -> list[str]:
    """Every function (methods included) of ``text``, dedented, ASCII, between ``min_bytes``
    and ``max_bytes`` long, that compiles on its own; in file order."""
    out = []
    for node in function_nodes(text):
        src = textwrap.dedent(ast.get_source_segment(text, node, padded=True) or "") + "\n"
        if src.isascii() and min_bytes <= len(src) <= max_bytes and compiles(src):
            out.append(src)
    return out


def compiles(source: str) -> bool:
    """Whether ``source`` compiles; warnings about its text (a model's completion: ``1if``'s
    "invalid decimal literal") are not the reader's, so they are not shown."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            compile(source, "<fim>", "exec")
        return True
    except (SyntaxError, ValueError):
        return False


def fim_items(texts: list[str], tokenizer, n: int, seed: int = 0,
              span: tuple[int, int] = (4, 40)) -> list[dict]:
    """``n`` random-span infilling items: a function with a span of ``span`` bytes removed
    from its body (after the ``def`` line), both ends strictly inside a token of the
    function's canonical encoding, the middle holding some non-space character."""
    if n < 1 or not 1 <= span[0] <= span[1]:
        raise ValueError(f"need n >= 1 and 1 <= span[0] <= span[1], got n={n}, span={span}")
    rng = random.Random(seed)
    order = rng.sample(range(len(texts)), len(texts))  # files in random order, read lazily
    pool = (src for f in order for src in _shuffled(functions(texts[f]), rng))
    items = []
    for src in pool:
        item = _cut(src, src.index("\n") + 1, tokenizer, rng, span)
        items += [item] if item else []
        if len(items) == n:
            return items
    raise ValueError(f"only {len(items)} of {n} items found in {len(texts)} files; "
                     "give more text or ask for fewer")


def humaneval_fim_items(problems, tokenizer, n: int, seed: int = 0,
                        span: tuple[int, int] = (4, 40)) -> list[dict]:
    """``n`` random-span infilling items from HumanEval (HumanEval-infilling's random-span
    benchmark, Bavarian et al. 2022): the removed middle is a random contiguous substring of
    ``span`` bytes of a problem's canonical solution, both ends strictly inside a token of the
    canonical encoding of prompt + solution; prefix and suffix keep the rest. ``problem``:
    the HumanEval problem, for its tests."""
    if n < 1 or not 1 <= span[0] <= span[1]:
        raise ValueError(f"need n >= 1 and 1 <= span[0] <= span[1], got n={n}, span={span}")
    rng, items = random.Random(seed), []
    for problem in rng.sample(list(problems), len(problems)):
        src = problem["prompt"] + problem["canonical_solution"]
        item = _cut(src, len(problem["prompt"]), tokenizer, rng, span) if src.isascii() else None
        items += [{**item, "problem": problem}] if item else []
        if len(items) == n:
            return items
    raise ValueError(f"only {len(items)} of {n} HumanEval items found; ask for fewer")


def _cut(src: str, body: int, tokenizer, rng: random.Random, span: tuple[int, int]) -> dict | None:
    """A span of ``src`` after offset ``body`` with both ends strictly inside a token and some
    non-space character, as an item; None after 20 draws without one."""
    ends = {end for _, end in tokenizer(src, add_special_tokens=False,
                                        return_offsets_mapping=True)["offset_mapping"]}  # ASCII: bytes
    for _ in range(20):
        length = rng.randint(*span)
        if body + 1 >= len(src) - length - 1:
            return None
        a = rng.randint(body + 1, len(src) - length - 1)
        b = a + length
        if a not in ends and b not in ends and src[a:b].strip():
            return {"prefix": src[:a], "middle": src[a:b], "suffix": src[b:]}
    return None


def _shuffled(xs: list, rng: random.Random) -> list:
    return rng.sample(xs, len(xs))


def fim_prompt(tokenizer, item: dict, fmt: str,
               sentinels: tuple[str, str, str] = (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)):
    """(token context, byte prompt): PSM ``<pre> prefix <suf> suffix <mid>`` with an empty
    byte prompt; SPM ``<pre> <suf> suffix <mid>`` with the prefix as the byte prompt (it and
    the middle form one segment, as in training: ``tokenworks.models.zoo.fim_text``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown FIM format {fmt!r}; choose one of {FORMATS}")
    ids = [tokenizer.convert_tokens_to_ids(s) for s in sentinels]
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"the tokenizer lacks a FIM sentinel of {sentinels}; pass "
                         "sentinels=(prefix, suffix, middle) token names for this model")
    pre, suf, mid = ids
    enc = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    if fmt == "psm":
        return (pre, *enc(item["prefix"]), suf, *enc(item["suffix"]), mid), b""
    return (pre, suf, *enc(item["suffix"]), mid), item["prefix"].encode()


def fill(method: str, item: dict, fmt: str, lms: list[ByteLM]) -> dict:
    """Fill ``item``'s middle with ``method`` in ``fmt``; ``lms[0]`` decodes, all of them for
    ``ensemble``. Small models rarely end a middle by themselves, so decoding stops after as
    many bytes as the true middle has (oracle length; ``ended``: the method ended it first).
    Returns the middle, its scores and its cost (model calls, seconds)."""
    lm, max_new_bytes = lms[0], len(item["middle"].encode())
    context, prompt = fim_prompt(lm.tokenizer, item, fmt)
    start, calls = time.perf_counter(), lm.calls
    if method in ("token", "healing"):
        middle, calls = _token_fill(lm, context, prompt, heal=method == "healing",
                                    max_new_bytes=max_new_bytes)
    elif method == "byte":
        middle = lm.generate(prompt, max_new_bytes, context=context)
        calls = lm.calls - calls
    elif method == "ensemble":
        contexts = [context] + [fim_prompt(m.tokenizer, item, fmt)[0] for m in lms[1:]]
        before = sum(m.calls for m in lms)
        middle = ByteEnsemble(lms).generate(prompt, max_new_bytes, contexts=contexts)
        calls = sum(m.calls for m in lms) - before
    else:
        raise ValueError(f"unknown method {method!r}; choose one of {ARMS}")
    text = middle.decode("utf-8", errors="replace")
    passed = None
    if "problem" in item:  # a HumanEval item: its tests, through the harness
        from tokenworks.benchmarks import passes
        whole = item["prefix"] + text + item["suffix"]
        passed = passes(item["problem"], whole[len(item["problem"]["prompt"]):])
    return {"middle": text, "exact": text == item["middle"], "ended": len(middle) < max_new_bytes,
            "passed": passed,
            "edit_similarity": edit_similarity(text, item["middle"]),
            "compiles": compiles(item["prefix"] + text + item["suffix"]),
            "bytes": len(middle), "calls": calls, "seconds": time.perf_counter() - start}


@torch.no_grad()
def _token_fill(lm: ByteLM, context: tuple, prompt: bytes, heal: bool, max_new_bytes: int):
    """Token-level greedy middle of at most ``max_new_bytes`` (bytes, model calls). ``heal``:
    token healing as in Guidance and ``transformers``' ``token_healing``: drop the prompt's
    last token and constrain the first new token to start with its bytes."""
    ids = [lm.start, *context, *lm.tokenizer(prompt.decode(), add_special_tokens=False)["input_ids"]]
    removed = lm.token_bytes[ids.pop()] if heal and prompt else b""
    allowed = [s for s, b in lm.token_bytes.items() if b.startswith(removed)] if removed else None
    cache, x, out, calls = DynamicCache(), ids, b"", 0
    while len(out) < len(removed) + max_new_bytes:
        logits = lm.model(torch.tensor([x], device=lm.device), past_key_values=cache,
                          use_cache=True).logits[0, -1]
        calls += 1
        token = allowed[int(logits[allowed].argmax())] if allowed else int(logits.argmax())
        if token == lm.eos:
            break
        out, x, allowed = out + lm.token_bytes.get(token, b""), [token], None
    return out[len(removed):len(removed) + max_new_bytes], calls


def humaneval_items(problems, tokenizer, n: int, seed: int = 0, cut: tuple[int, int] = (1, 40)) -> list[dict]:
    """``n`` HumanEval completion items whose prompt ends inside a token (the paper's setting):
    the problem's prompt plus the first ``k`` bytes of its canonical solution, ``k`` drawn
    from ``cut`` and landing strictly inside a token of the canonical encoding of prompt +
    solution; ``target`` is the rest of the solution. Items follow a seeded shuffle of
    ``problems``."""
    if n < 1 or not 1 <= cut[0] <= cut[1]:
        raise ValueError(f"need n >= 1 and 1 <= cut[0] <= cut[1], got n={n}, cut={cut}")
    rng, items = random.Random(seed), []
    for problem in rng.sample(list(problems), len(problems)):
        whole = problem["prompt"] + problem["canonical_solution"]
        if not whole.isascii():
            continue
        enc = tokenizer(whole, add_special_tokens=False, return_offsets_mapping=True)
        ends = {end for _, end in enc["offset_mapping"]}  # token boundaries (ASCII: bytes)
        inside = [k for k in range(cut[0], min(cut[1], len(problem["canonical_solution"]) - 1) + 1)
                  if len(problem["prompt"]) + k not in ends]
        if inside:
            k = rng.choice(inside)
            items.append({"problem": problem, "prompt": whole[:len(problem["prompt"]) + k],
                          "target": problem["canonical_solution"][k:]})
        if len(items) == n:
            return items
    raise ValueError(f"only {len(items)} of {n} HumanEval items cut inside a token; ask for fewer")


def complete_humaneval(method: str, item: dict, lm: ByteLM, max_new_bytes: int = 256,
                       timeout: float = 5.0) -> dict:
    """Complete ``item``'s cut prompt with ``method`` (token, healing or byte greedy) for at
    most ``max_new_bytes``, cut at the function's end (the first line that starts without
    indentation); pass@1 through HumanEval's harness (``tokenworks.benchmarks.passes``) and
    edit similarity to the rest of the canonical solution."""
    from tokenworks.benchmarks import passes

    prompt = item["prompt"].encode()
    start, calls = time.perf_counter(), lm.calls
    if method in ("token", "healing"):
        new, calls = _token_fill(lm, (), prompt, heal=method == "healing", max_new_bytes=max_new_bytes)
    elif method == "byte":
        new = lm.generate(prompt, max_new_bytes)
        calls = lm.calls - calls
    else:
        raise ValueError(f"unknown method {method!r}; choose one of ('token', 'healing', 'byte')")
    text = function_end(new.decode("utf-8", errors="replace"))
    completion = item["prompt"][len(item["problem"]["prompt"]):] + text
    return {"completion": text, "passed": passes(item["problem"], completion, timeout),
            "edit_similarity": edit_similarity(text, item["target"]), "bytes": len(new),
            "calls": calls, "seconds": time.perf_counter() - start}


def summarize_humaneval(rows: list[dict]) -> list[dict]:
    """Per method: pass@1 (greedy, one sample per problem), mean edit similarity with its 95%
    bootstrap interval, model calls and seconds per generated byte."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        edit, n_bytes = [r["edit_similarity"] for r in rs], max(1, sum(r["bytes"] for r in rs))
        low, high = bootstrap(edit)
        out.append({"method": method, "n": len(rs), "pass_at_1": sum(r["passed"] for r in rs) / len(rs),
                    "edit_similarity": sum(edit) / len(rs), "edit_low": low, "edit_high": high,
                    "calls_per_byte": sum(r["calls"] for r in rs) / n_bytes,
                    "seconds_per_byte": sum(r["seconds"] for r in rs) / n_bytes})
    return out


def function_end(text: str) -> str:
    """``text`` up to its first line that starts with a non-space character (the body ends)."""
    lines = text.split("\n")
    for i, line in enumerate(lines[1:], 1):
        if line[:1].strip():
            return "\n".join(lines[:i]) + "\n"
    return text


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein distance / the longer length (1.0 for two empty strings)."""
    if not a and not b:
        return 1.0
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return 1 - row[-1] / max(len(a), len(b))


def run_fim(items: list[dict], lms: list[ByteLM], plan: dict[str, tuple[str, ...]],
            desc: str = "fim") -> list[dict]:
    """Every item under every (format, method) of ``plan`` ({format: methods})."""
    rows = []
    for i, item in enumerate(tqdm(items, desc=desc, mininterval=10)):
        for fmt, methods in plan.items():
            for method in methods:
                rows.append({"item": i, "format": fmt, "method": method,
                             **fill(method, item, fmt, lms)})
    return rows


def summarize_fim(rows: list[dict]) -> list[dict]:
    """Per (format, method): mean exact match, edit similarity (95% bootstrap interval),
    compile rate, how often the method ended the middle itself, model calls and seconds per
    generated byte."""
    out = []
    for key in dict.fromkeys((r["format"], r["method"]) for r in rows):
        rs = [r for r in rows if (r["format"], r["method"]) == key]
        edit = [r["edit_similarity"] for r in rs]
        n_bytes = max(1, sum(r["bytes"] for r in rs))
        low, high = bootstrap(edit)
        out.append({"format": key[0], "method": key[1], "n": len(rs),
                    "exact": sum(r["exact"] for r in rs) / len(rs),
                    "edit_similarity": sum(edit) / len(rs), "edit_low": low, "edit_high": high,
                    "compiles": sum(r["compiles"] for r in rs) / len(rs),
                    "pass_at_1": (sum(r["passed"] for r in rs) / len(rs)
                                  if all(r.get("passed") is not None for r in rs) else None),
                    "ended": sum(r["ended"] for r in rs) / len(rs),
                    "calls_per_byte": sum(r["calls"] for r in rs) / n_bytes,
                    "seconds_per_byte": sum(r["seconds"] for r in rs) / n_bytes})
    return out


def fim_difference(rows: list[dict], a: tuple[str, str], b: tuple[str, str]) -> dict:
    """Paired mean difference of edit similarity, (format, method) ``a`` minus ``b``, with a
    95% bootstrap interval over items."""
    pick = lambda k: [r["edit_similarity"] for r in sorted(rows, key=lambda r: r["item"])  # noqa: E731
                      if (r["format"], r["method"]) == k]
    x, y = pick(a), pick(b)
    low, high = bootstrap(x, y)
    return {"mean": (sum(x) - sum(y)) / len(x), "ci_low": low, "ci_high": high}


def byte_logprobs(next_byte_logprobs, data: bytes, desc: str = "bytes") -> list[float]:
    """log P(data[i] | data[:i]) for every byte, from ``next_byte_logprobs(prefix) -> [257]``."""
    return [float(next_byte_logprobs(data[:i])[data[i]])
            for i in tqdm(range(len(data)), desc=desc, mininterval=10, leave=False)]


def snippets(texts: list[str], n: int, n_bytes: int, seed: int = 0) -> list[bytes]:
    """``n`` ASCII windows of ``n_bytes`` bytes, each starting at a line start of a file."""
    rng, out = random.Random(seed), []
    files = [t for t in texts if t.isascii() and len(t) > 2 * n_bytes]
    for _ in range(50 * n):
        text = rng.choice(files)
        at = text.rfind("\n", 0, rng.randint(0, len(text) - n_bytes)) + 1
        out.append(text[at:at + n_bytes].encode())
        if len(out) == n:
            return out
    raise ValueError(f"found {len(out)} of {n} snippets of {n_bytes} bytes")


def mean_bits(logps: list[float]) -> float:
    return -sum(logps) / len(logps) / math.log(2)


# --- the genlm-bytes peer -------------------------------------------------------------------

def genlm_next_byte_logprobs(model, tokenizer, data: bytes, K: int = 5) -> tuple[list[torch.Tensor], float]:
    """genlm-bytes' next-byte distributions [257] before each byte of ``data`` and after it,
    teacher-forced through its beam of width ``K`` (no pruning threshold, healing off, EOS
    as the end of text); and the seconds taken."""
    from genlm.backend.llm import AsyncTransformer
    from genlm.bytes import BeamParams, ByteBeamState

    # its trie's sparse tensors make torch print a beta notice, with the install's path
    warnings.filterwarnings("ignore", message="Sparse (CSR tensor support|invariant checks)", category=UserWarning)
    tokenizer = copy.deepcopy(tokenizer)
    if tokenizer.bos_token_id is None:  # genlm starts from BOS; the zoo starts from EOS
        tokenizer.bos_token = tokenizer.eos_token
    llm = AsyncTransformer(model, tokenizer)
    params = BeamParams(K=K, heal=False, eos_byte_strings=[tokenizer.eos_token.encode()])

    async def walk():
        state, out = await ByteBeamState.initial(llm, params), []
        for i in range(len(data) + 1):
            ps = torch.tensor((await state.logp_next()).ps, dtype=torch.float64)  # [258]
            out.append(torch.cat([ps[:256], ps[257:]]))  # drop EOT; EOS is the end of text
            if i < len(data):
                state = await (state.prune() << data[i])
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:  # its own event loop: Jupyter's is already running
        out = pool.submit(asyncio.run, walk()).result()
    return out, time.perf_counter() - start


def compare_with_genlm(lm: ByteLM, data: bytes, K: int = 5) -> dict:
    """Per-byte agreement of ours and genlm-bytes' distributions along ``data``: total
    variation, argmax agreement, bits per byte of ``data`` under each, and seconds per byte."""
    start = time.perf_counter()
    ours = [lm.next_byte_logprobs(data[:i]) for i in range(len(data) + 1)]
    ours_s = time.perf_counter() - start
    theirs, theirs_s = genlm_next_byte_logprobs(lm.model, lm.tokenizer, data, K)
    tv = [0.5 * float((a.exp() - b.exp()).abs().sum()) for a, b in zip(ours, theirs)]
    n = len(data) + 1
    return {"K": K, "bytes": len(data), "mean_tv": sum(tv) / n, "max_tv": max(tv),
            "argmax_agree": sum(int(a.argmax()) == int(b.argmax()) for a, b in zip(ours, theirs)) / n,
            "bpb_ours": mean_bits([float(o[b]) for o, b in zip(ours, data)]),
            "bpb_genlm": mean_bits([float(t[b]) for t, b in zip(theirs, data)]),
            "end_ours": float(ours[-1][END].exp()), "end_genlm": float(theirs[-1][END].exp()),
            "s_per_byte_ours": ours_s / n, "s_per_byte_genlm": theirs_s / n}


# --- the verdict ----------------------------------------------------------------------------

def _fim(fim_summary: list[dict], fim_diffs: dict[str, dict]) -> dict[tuple[str, str], dict]:
    """``fim_summary`` by (format, method), after checking it and ``fim_diffs`` hold what the
    verdict reads."""
    by = {(r["format"], r["method"]): r for r in fim_summary}
    missing = [f"{f} {m}" for f, m in (("spm", "token"), ("spm", "healing"), ("spm", "byte")) if (f, m) not in by]
    missing += [k for k in ("spm byte - token", "spm byte - healing") if k not in fim_diffs]
    if missing:
        raise ValueError(f"the verdict needs {missing}: run SPM with token, healing and byte (summarize_fim) "
                         "and their paired differences (fim_difference)")
    return by


def _members(bpb: dict[str, float]) -> list[str]:
    """The single models of ``bpb`` (every key but ``ensemble``)."""
    members = [k for k in bpb if k != "ensemble"]
    if "ensemble" in bpb and len(members) != 2:
        raise ValueError(f"an ensemble's bits per byte needs its two models' beside it; got {sorted(bpb)}")
    return members


def _gain(d: dict) -> str:
    return f"{d['mean']:+.3f} edit similarity ({d['ci_low']:+.3f} to {d['ci_high']:+.3f})"


def verdict(fim_summary: list[dict], fim_diffs: dict[str, dict], bpb: dict[str, float]) -> list[Claim]:
    """The paper's three claims (``tokenworks.verdicts.Claim``), all on proxies, from
    :func:`summarize_fim`, the paired differences of :func:`fim_difference` (named ``"spm byte
    - token"`` etc.) and bits per byte (model name -> bits, ``ensemble`` for their mean).
    **Byte beats token level in SPM**: the paired 95% interval of byte - token edit similarity
    lies above 0. **Byte at least matches token healing**: the mean of byte - healing is at
    least 0. **The ensemble helps**: its bits per byte is below the better single model's;
    not measured (None) without an ensemble. Edit similarity (``FIM_PROXY``) and bits per byte
    stand in for the paper's pass rate and task scores."""
    by = _fim(fim_summary, fim_diffs)
    n, tok, heal = by["spm", "byte"]["n"], fim_diffs["spm byte - token"], fim_diffs["spm byte - healing"]
    members = _members(bpb)
    claims = [
        Claim("FIM, SPM, prompt ends inside a token: byte level beats token level",
              "+18 pts pass rate (45.0 → 63.9, CodeLlama-7B; unverified)",
              f"{_gain(tok)}: {by['spm', 'token']['edit_similarity']:.3f} → {by['spm', 'byte']['edit_similarity']:.3f}, {n} items",
              "paired 95% bootstrap interval of byte - token edit similarity over the items lies above 0",
              tok["ci_low"] > 0, proxy=FIM_PROXY),
        Claim("FIM, SPM: byte level at least matches token healing", "about +1 pt pass rate (unverified)",
              f"{_gain(heal)}: {by['spm', 'healing']['edit_similarity']:.3f} → {by['spm', 'byte']['edit_similarity']:.3f}, {n} items",
              "mean byte - healing edit similarity over the items at or above 0", heal["mean"] >= 0, proxy=FIM_PROXY)]
    if "ensemble" in bpb:
        best = min(members, key=bpb.get)
        claims.append(Claim(
            f"Byte-level ensemble of {' and '.join(members)} (different tokenizers) beats each alone",
            "up to +3.7% over the individual models (abstract; task scores; unverified)",
            f"{bpb['ensemble']:.3f} bits/byte vs. {best} alone {bpb[best]:.3f} "
            f"({100 * (bpb[best] - bpb['ensemble']) / bpb[best]:+.1f}%)",
            "the ensemble's bits per byte of held-out code below the better single model's", bpb["ensemble"] < bpb[best],
            proxy="bits per byte of held-out code in place of task scores"))
    else:
        claims.append(Claim("Byte-level ensemble of models with different tokenizers beats each alone",
                            "up to +3.7% over the individual models (abstract; task scores; unverified)",
                            "no ensemble in this run", "the ensemble's bits per byte below the better single model's",
                            None, proxy="bits per byte of held-out code in place of task scores"))
    return claims


def context(fim_summary: list[dict], fim_diffs: dict[str, dict], humaneval_summary: list[dict]) -> list[tuple[str, str, str]]:
    """Rows that inform without deciding: pass@1 of the FIM items where they come from
    HumanEval (the paper's metric, but on a small model with the true middle's length given),
    the PSM control, the FIM ensemble against its first model, and HumanEval completion cut
    inside a token (``summarize_humaneval``; the paper gives no number for it)."""
    by = _fim(fim_summary, fim_diffs)
    spm = [m for m in ARMS if ("spm", m) in by]
    rows = []
    if all(by["spm", m]["pass_at_1"] is not None for m in spm):
        rows.append(("FIM, SPM: pass@1 through HumanEval's harness (true middle's length given)",
                     "45.0 → 63.9 token → byte (CodeLlama-7B; unverified)",
                     " / ".join(f"{m} {100 * by['spm', m]['pass_at_1']:.1f}%" for m in spm)))
    if "psm byte - token" in fim_diffs:
        rows.append(("FIM, PSM (no prompt ends inside a token, the control): byte - token", "-",
                     _gain(fim_diffs["psm byte - token"])))
    if "spm ensemble - byte" in fim_diffs:
        rows.append(("FIM, SPM: byte-level ensemble of two FIM models - the first alone", "-",
                     _gain(fim_diffs["spm ensemble - byte"])))
    if humaneval_summary:
        he = {r["method"]: r for r in humaneval_summary}
        rows.append(("HumanEval completion cut inside a token: pass@1 token / healing / byte",
                     "no number (the +18 pts is FIM)",
                     " / ".join(f"{100 * he[m]['pass_at_1']:.1f}%" for m in ("token", "healing", "byte"))
                     + f" on {he['token']['n']} problems; edit similarity "
                     + " / ".join(f"{he[m]['edit_similarity']:.2f}" for m in ("token", "healing", "byte"))))
    return rows


def headline(fim_summary: list[dict], fim_diffs: dict[str, dict], bpb: dict[str, float]) -> str:
    """This run's numbers for the README: SPM edit similarity (and pass@1 where measured) of
    token level, token healing and byte level, and the ensemble's bits per byte."""
    by, members = _fim(fim_summary, fim_diffs), _members(bpb)
    arms = ("token", "healing", "byte")
    text = "SPM FIM edit similarity " + " / ".join(f"{m} {by['spm', m]['edit_similarity']:.2f}" for m in arms)
    if all(by["spm", m]["pass_at_1"] is not None for m in arms):
        text += " (pass@1 " + " / ".join(f"{100 * by['spm', m]['pass_at_1']:.0f}%" for m in arms) + ")"
    if "ensemble" in bpb:
        text += f"; ensemble {bpb['ensemble']:.3f} vs. {min(bpb[m] for m in members):.3f} bits/byte"
    return text + " (proxies: edit similarity, bits per byte)"
