"""Figures drawn from results records (``results/<method>/<config>.json``), never from live runs."""
from __future__ import annotations

import matplotlib.pyplot as plt

from tokenworks.style import log_ticks, mean_or_nan


def _needle_heatmaps(record: dict, names: list[str], ncols: int, key: str = "needles",
                     haystack: str = "a haystack of code"):
    """Needle accuracy over context length x depth, one heatmap per method in ``names``, from
    the rows ``record["metrics"][key]``."""
    m = record["metrics"]
    rows = m[key]
    contexts = sorted({r["context_target"] for r in rows})
    depths = sorted({r["depth"] for r in rows})
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 3.2 * nrows + 0.4), dpi=110, squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        grid = [[mean_or_nan(r["ok"] for r in rows if r["method"] == name and r["context_target"] == c
                       and r["depth"] == d) for c in contexts] for d in depths]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="lower")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(contexts)), [str(c) for c in contexts], fontsize=8)
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths], fontsize=8)
        ax.set(xlabel="context (tokens)", ylabel="needle depth", title=name)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="retrieved")
    fig.suptitle(f"needle in {haystack}, {m['model']}, {record['provenance']['device']}", fontsize=9)
    return fig


def essay_needle(record: dict, ncols: int = 5):
    """The original needle test on the essays: retrieval over context length x depth, one
    heatmap per method of ``record["metrics"]["essay_methods"]``, as the EMS and TokenSelect
    papers plot it."""
    return _needle_heatmaps(record, record["metrics"]["essay_methods"], ncols, key="essay",
                            haystack="Paul Graham's essays")


def tokenselect_needle(record: dict):
    """Needle accuracy over context length x depth, one heatmap per method."""
    names = record["metrics"]["heatmap_methods"]
    return _needle_heatmaps(record, names, len(names))


def tokenselect_budget(record: dict):
    """Needle accuracy and continuation NLL against the number of attended cache entries."""
    m = record["metrics"]
    fig, (acc, nll) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    budgets = sorted({spec["budget"] for spec in m["methods"].values() if spec["budget"]})
    for kind, colour, label in (("streaming", "tab:gray", "StreamingLLM (evicts)"), ("tokenselect", "tab:red", "TokenSelect"),
                                ("tokenselect_cached", "tab:orange", "TokenSelect + selection cache")):
        names = sorted((spec["budget"], n) for n, spec in m["methods"].items() if spec["kind"] == kind)
        if not names:
            continue
        x = [b for b, _ in names]
        acc.plot(x, [mean_or_nan(r["ok"] for r in m["needles"] if r["method"] == n) for _, n in names], "-o",
                 color=colour, label=label)
        nll.plot(x, [mean_or_nan(r["nll"] for r in m["perplexity"] if r["method"] == n) for _, n in names], "-o",
                 color=colour, label=label)
    acc.axhline(mean_or_nan(r["ok"] for r in m["needles"] if r["method"] == "full"), color="k", ls="--", label="full cache")
    nll.axhline(mean_or_nan(r["nll"] for r in m["perplexity"] if r["method"] == "full"), color="k", ls="--", label="full cache")
    acc.set(xscale="log", xlabel="attended cache entries per query", ylabel="needles retrieved", ylim=(-0.02, 1.02),
            title="needle in a haystack")
    nll.set(xscale="log", xlabel="attended cache entries per query", ylabel="mean NLL (nats/token)",
            title=f"continuation after {m['ppl_context']} tokens")
    for a in (acc, nll):
        log_ticks(a, budgets)
    acc.legend(fontsize=7)
    fig.suptitle(f"TokenSelect vs. StreamingLLM at equal attended budgets, {m['model']}, "
                 f"{record['provenance']['device']}", fontsize=9)
    fig.tight_layout()
    return fig


def tokenselect_attention_time(record: dict):
    """GPU decode-attention time against context length (from the benchmark record it embeds)."""
    gpu = record["metrics"]["kernel_gpu"]
    if not gpu:  # no GPU measurement yet: say so instead of drawing nothing
        fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
        ax.text(0.5, 0.5, "no GPU record: run reproduce/bench_tokenselect.py on a GPU", ha="center")
        ax.set_axis_off()
        return fig
    rows = gpu["rows"]
    x = [r["context"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    for key, label, style in (("sdpa_ms", "full decode attention (PyTorch SDPA)", "-ok"),
                              ("kernel_full_ms", "our kernel, every token", "--s"),
                              ("kernel_selected_ms", f"our kernel, {rows[0]['selected']} selected tokens", "-o"),
                              ("select_ms", "selection (Q.K, softmax, vote, top-k)", ":^")):
        ax.plot(x, [r[key] for r in rows], style, label=label)
    ax.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="ms per layer and decode step",
           title=f"one 7B-like layer (32 query / 8 KV heads, dim 128, fp16), {gpu['device']}")
    ax.title.set_fontsize(9)
    log_ticks(ax, x, [f"{c // 1024}k" for c in x])
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def streamingllm_budget(record: dict):
    """Mean NLL after the first eviction against the cache budget: one line per sink count,
    with sliding-window recomputation and the full (dense) cache."""
    m = record["metrics"]
    rows = m["budget_table"]
    budgets = sorted({r["budget"] for r in rows})
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["budget"], r["nll"]) for r in rows if r["method"] == method)
        style = "--k" if method == "dense" else ":ok" if method == "recompute" else "-o"
        ax.plot(*zip(*pts), style, label=method)
    ax.set(xscale="log", xlabel="KV cache budget (entries)", ylabel="mean NLL after the first eviction (nats/token)",
           title=f"{m['model']}, {m['n_streams']} streams of {m['stream_tokens']} tokens, {record['provenance']['device']}")
    log_ticks(ax, budgets)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def streamingllm_stream(record: dict):
    """NLL along one long stream (means over bins of tokens) for each method."""
    m = record["metrics"]["long_stream"]
    fig, ax = plt.subplots(figsize=(7.5, 4), dpi=110)
    for method, values in m["binned_nll"].items():
        x = [(i + 0.5) * m["bin"] for i in range(len(values))]
        ax.plot(x, values, "--k" if method == "dense" else ":k" if method == "recompute" else "-", label=method)
    ax.axvline(m["trained_context"], color="grey", lw=0.8)
    ax.text(m["trained_context"], ax.get_ylim()[1], " training length", fontsize=7, va="top")
    ax.set(xlabel="position in the stream (tokens)", ylabel=f"mean NLL over {m['bin']}-token bins",
           title=f"budget {m['budget']} entries, {record['metrics']['model']}, {record['provenance']['device']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def ems_needle(record: dict):
    """Needle heatmaps of every press at the paper's budget, 256 entries per head (or the
    largest run below it), beside the full cache."""
    budgets = record["metrics"]["budgets"]
    budget = max([b for b in budgets if b <= 256] or budgets)
    names = ["full"] + [f"{p} {budget}" for p in record["parameters"]["presses"]]
    return _needle_heatmaps(record, names, 5)


EMS_STYLE = {"ems": ("tab:red", "-o"), "snapkv": ("tab:blue", "-s"), "streaming": ("tab:gray", "-v"),
             "h2o": ("tab:green", "-^"), "pyramidkv": ("tab:purple", "--s"), "adakv": ("tab:cyan", "--o"),
             "tova": ("tab:olive", ":D"), "knorm": ("tab:brown", ":x")}


def ems_budget(record: dict):
    """One panel per task: needles, key-value retrieval / threads, continuation NLL, against the
    budget (entries per KV head), a line per press; the full cache dashed."""
    m = record["metrics"]
    panels = [("needles", "needles retrieved", "needle in a haystack")]
    panels += [(f"kv hops={h}", "retrieved", "key-value retrieval" if h == 0 else f"thread, {h} hop(s)")
               for h in m["kv_hops"]]
    panels += [("nll", "mean NLL (nats/token)", f"continuation after {m['ppl_context']} tokens")]
    if m.get("hub"):
        panels += [("hub", "answered", record["parameters"]["hub_dataset"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.9 * len(panels) + 1.2, 3.8), dpi=110, squeeze=False,
                             layout="constrained")
    rows = {t["method"]: t for t in m["table"]}
    for ax, (key, ylabel, title) in zip(axes[0], panels):
        for press, (colour, style) in EMS_STYLE.items():
            pts = sorted((t["budget"], t[key]) for t in m["table"] if t["press"] == press and t["variant"] == "")
            if pts:
                ax.plot(*zip(*pts), style, color=colour, label=press, ms=4)
        ax.axhline(rows["full"][key], color="k", ls="--", lw=1, label="full cache")
        ax.set(xscale="log", xlabel="budget (entries per KV head)", ylabel=ylabel, title=title)
        log_ticks(ax, m["budgets"])
        if key != "nll":
            ax.set_ylim(-0.02, 1.02)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    fig.suptitle(f"EMS and baselines, {m['model']}, {record['provenance']['device']}", fontsize=9)
    return fig


def gemfilter_layers(record: dict):
    """Share of the needle's tokens that GemFilter's top-k keeps, against the selection layer,
    one line per context length, the chosen layer marked."""
    m = record["metrics"]
    rows = m["layer_recall"]
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=110)
    layers = sorted({r["layer"] for r in rows})
    for i, c in enumerate(sorted({r["context_target"] for r in rows})):
        ax.plot(layers, [mean_or_nan(r["recall"] for r in rows if r["layer"] == l and r["context_target"] == c)
                         for l in layers], "-o", ms=3, color=f"C{i}", label=f"{c} tokens")
    ax.axvline(m["layer"], color="k", ls="--", lw=1, label=f"chosen r = {m['layer']}")
    ax.set(xlabel="selection layer r", ylabel="needle tokens kept", ylim=(-0.02, 1.02),
           title=f"GemFilter's top-{m['k']} at each layer (essay needles)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(f"{m['model']}, {record['provenance']['device']}", fontsize=9)
    fig.tight_layout()
    return fig


def gemfilter_ttft(record: dict):
    """Time to first token against the prompt length: the full prefill, SnapKV and GemFilter
    (left), and each over the full prefill (right)."""
    m = record["metrics"]
    rows = m["first_token"]
    contexts = sorted({r["context_target"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, (ax, rel) = plt.subplots(1, 2, figsize=(10.5, 3.6), dpi=110)
    full = {c: mean_or_nan(r["seconds"] for r in rows if r["method"] == "full" and r["context_target"] == c)
            for c in contexts}
    for i, name in enumerate(methods):
        secs = [mean_or_nan(r["seconds"] for r in rows if r["method"] == name and r["context_target"] == c) for c in contexts]
        ax.plot(contexts, secs, "-o", ms=4, color=f"C{i}", label=name)
        rel.plot(contexts, [full[c] / s for c, s in zip(contexts, secs)], "-o", ms=4, color=f"C{i}", label=name)
    ax.set(xscale="log", yscale="log", xlabel="prompt tokens", ylabel="seconds to the first token",
           title="time to first token, side by side")
    rel.axhline(1, color="grey", lw=0.8)
    rel.set(xscale="log", xlabel="prompt tokens", ylabel="speed-up over the full prefill (x)",
            title="against the full prefill")
    for a in (ax, rel):
        log_ticks(a, contexts)
    rel.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(f"{m['model']}, {record['provenance']['device']}", fontsize=9)
    fig.tight_layout()
    return fig


def razor_heads(record: dict):
    """The probe's induction and echo scores, layer x query head, the retrieval heads' query
    heads outlined (a KV head is chosen for its whole group)."""
    m = record["metrics"]
    heads = m["retrieval_heads"]  # [L][Hkv] bools
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), dpi=110, layout="constrained")
    for ax, part in zip(axes, ("induction", "echo")):
        grid = m["head_scores"][part]  # [L][Hq]
        im = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower", vmin=0)
        group = len(grid[0]) // len(heads[0])
        for layer, row in enumerate(heads):
            for kv, chosen in enumerate(row):
                if chosen:
                    ax.add_patch(plt.Rectangle((kv * group - 0.5, layer - 0.5), group, 1, fill=False,
                                               edgecolor="red", lw=1.2))
        ax.set(xlabel="query head", ylabel="layer", title=f"{part} score (red: retrieval heads' groups)")
        fig.colorbar(im, ax=ax, shrink=0.85)
    fig.suptitle(f"RazorAttention's probe ({m['probe_n']} random tokens x {m['probe_repeats']}), {m['model']}, "
                 f"{record['provenance']['device']}", fontsize=9)
    return fig


RAZOR_STYLE = {"razor": ("tab:orange", "-o"), "razor, no compensation": ("tab:orange", "--^"),
               "razor, random heads": ("tab:orange", ":x"), **{p: EMS_STYLE[p] for p in ("ems", "snapkv", "streaming")}}


def razor_tradeoff(record: dict):
    """Essay needles retrieved and long-text NLL against the KV reduction (the share of entries
    dropped, over all heads), a line per method; the full cache dashed."""
    m = record["metrics"]
    rows = {t["method"]: t for t in m["table"]}
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8), dpi=110, layout="constrained")
    for ax, (key, ylabel, title) in zip(axes, [("essay", "essay needles retrieved", "needle in the essays"),
                                               ("nll", "mean NLL (nats/token)", f"continuation after {m['ppl_context']} tokens")]):
        for name, (colour, style) in RAZOR_STYLE.items():
            pts = sorted((t["reduction"], t[key]) for t in m["table"] if t["family"] == name)
            if pts:
                ax.plot(*zip(*pts), style, color=colour, label=name, ms=5)
        ax.axhline(rows["full"][key], color="k", ls="--", lw=1, label="full cache")
        ax.set(xlabel="KV entries dropped (share of the full cache)", ylabel=ylabel, title=title)
        ax.set_xticks(m["reductions"], [f"{r:.0%}" for r in m["reductions"]])
        if key == "essay":
            ax.set_ylim(-0.02, 1.02)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    fig.suptitle(f"RazorAttention at equal entries held, {m['model']}, {record['provenance']['device']}", fontsize=9)
    return fig
