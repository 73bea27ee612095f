"""Figures drawn from results records (``results/<method>/<config>.json``), never from live runs.

Every figure of the family takes its colours from one palette, ``COLOURS``, built once over a
fixed list of method kinds, so that a method keeps its colour (and its marker, ``STYLES``) from
figure to figure; the full cache, every figure's reference, is black. Legends sit outside the
data, panels without data are not drawn, and axes span the data."""
from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker

from tokenworks.style import legend_outside, log_ticks, mean_or_nan, palette

KINDS = ["snapkv", "razor", "gemfilter", "ems", "tokenselect", "window", "tokenselect_cached", "streaming", "tova",
         "recompute", "h2o", "adakv", "pyramidkv", "knorm", "other sinks"]  # the first ten get tab10's strong colours
COLOURS = {"full": "black", **palette(KINDS)}
# kind -> (line style, marker): methods that share a figure differ in marker as well as colour
STYLES = {"full": ("--", ""), "snapkv": ("-", "s"), "razor": ("-", "o"), "gemfilter": ("-", "D"), "ems": ("-", "o"),
          "tokenselect": ("-", "o"), "window": ("-", "v"), "tokenselect_cached": ("--", "s"), "streaming": ("-", "^"),
          "tova": (":", "D"), "recompute": (":", "x"), "h2o": ("--", "^"), "adakv": ("--", "o"),
          "pyramidkv": ("--", "s"), "knorm": (":", "x"), "other sinks": ("--", "s")}
# RazorAttention's ablations: its colour, their own line and marker
VARIANTS = {"razor, no compensation": ("razor", "--", "^"), "razor, random heads": ("razor", ":", "x")}
HOLLOW = {"tokenselect_cached", "other sinks"}  # drawn hollow and larger, so a method they equal shows through


def line_style(name: str) -> dict:
    """Keyword arguments of ``ax.plot`` for a method kind (``COLOURS``, ``STYLES``) or a variant (``VARIANTS``)."""
    kind, ls, marker = VARIANTS.get(name) or (name, *STYLES.get(name, (None, None)))
    if kind not in COLOURS:
        raise ValueError(f"no colour for method kind {name!r}: add it to KINDS in tokenworks.kvcache.plots")
    style = {"color": COLOURS[kind], "ls": ls, "marker": marker, "ms": 5}
    if kind in HOLLOW:
        style.update(mfc="none", ms=9, mew=1.3, zorder=3)
    return style


def _fit_x(ax, xs, log: bool = True, labels=None):
    """Ticks at the measured ``xs`` and limits just around them (a single x gets a narrow window)."""
    lo, hi = min(xs), max(xs)
    if log:
        log_ticks(ax, sorted(set(xs)), labels)
        ax.set_xlim(lo / 1.25, hi * 1.25)
    else:
        pad = (hi - lo) * 0.08 or max(abs(lo) * 0.1, 0.05)
        ax.set_xticks(sorted(set(xs)), labels=labels)
        ax.set_xlim(lo - pad, hi + pad)


def _plain_log_y(ax, values):
    """Readable ticks (1, 2, 5 x powers of ten) on a log y axis spanning ``values``."""
    lo, hi = min(values), max(values)
    ticks = [m * 10 ** e for e in range(-4, 5) for m in (1, 2, 5) if lo / 1.5 <= m * 10 ** e <= hi * 1.5]
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if ticks:
        ax.set_yticks(ticks, labels=[f"{t:g}" for t in ticks])


def _outside_legend(fig, axes, **kw):
    """One legend for ``fig``, right of its panels: the labels of every panel, each once."""
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    return fig.legend(handles.values(), handles.keys(), loc="outside right center", fontsize=8, frameon=False, **kw)


def _needle_heatmaps(record: dict, names: list[str], ncols: int, key: str = "needles",
                     haystack: str = "a haystack of code"):
    """Needle accuracy over context length x depth, one heatmap per method in ``names`` that
    has rows in ``record["metrics"][key]``."""
    m = record["metrics"]
    rows = m[key]
    names = [n for n in names if any(r["method"] == n for r in rows)]
    if not names:
        raise ValueError(f"no rows of {key!r} for any of the methods asked: nothing to draw")
    contexts = sorted({r["context_target"] for r in rows})
    depths = sorted({r["depth"] for r in rows})
    ncols = min(ncols, len(names))
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
                dark = v == v and (v < 0.25 or v > 0.75)  # the colour map's dark ends take white text
                ax.text(j, i, "-" if v != v else f"{v:.0%}", ha="center", va="center", fontsize=9,
                        color="white" if dark else "black", fontweight="bold")
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
    fig, (acc, nll) = plt.subplots(1, 2, figsize=(10.5, 3.8), dpi=110, layout="constrained")
    budgets = sorted({spec["budget"] for spec in m["methods"].values() if spec["budget"]})
    for kind, label in (("streaming", "StreamingLLM (evicts)"), ("tokenselect", "TokenSelect"),
                        ("tokenselect_cached", "TokenSelect + selection cache")):
        names = sorted((spec["budget"], n) for n, spec in m["methods"].items() if spec["kind"] == kind)
        if not names:
            continue
        x = [b for b, _ in names]
        acc.plot(x, [mean_or_nan(r["ok"] for r in m["needles"] if r["method"] == n) for _, n in names],
                 label=label, **line_style(kind))
        nll.plot(x, [mean_or_nan(r["nll"] for r in m["perplexity"] if r["method"] == n) for _, n in names],
                 label=label, **line_style(kind))
    full = line_style("full")
    acc.axhline(mean_or_nan(r["ok"] for r in m["needles"] if r["method"] == "full"), color=full["color"], ls="--",
                lw=1, label="full cache")
    nll.axhline(mean_or_nan(r["nll"] for r in m["perplexity"] if r["method"] == "full"), color=full["color"], ls="--",
                lw=1, label="full cache")
    acc.set(xscale="log", xlabel="attended cache entries per query", ylabel="code needles retrieved",
            ylim=(-0.04, 1.04), title="needles in held-out code")
    nll.set(xscale="log", xlabel="attended cache entries per query", ylabel="mean NLL (nats/token)",
            title=f"continuation after {m['ppl_context']} tokens")
    for a in (acc, nll):
        _fit_x(a, budgets)
    _outside_legend(fig, (acc, nll))
    fig.suptitle(f"TokenSelect vs. StreamingLLM at equal attended budgets\n{m['model']}, "
                 f"{record['provenance']['device']}", fontsize=9)
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
    fig, ax = plt.subplots(figsize=(7.8, 4), dpi=110)
    full, select = COLOURS["full"], COLOURS["tokenselect"]
    for key, label, style in (("sdpa_ms", "full decode attention (PyTorch SDPA)", dict(color=full, ls="-", marker="o")),
                              ("kernel_full_ms", "our kernel, every token", dict(color=full, ls="--", marker="s", mfc="none")),
                              ("kernel_selected_ms", f"our kernel, {rows[0]['selected']} selected tokens",
                               dict(color=select, ls="-", marker="o")),
                              ("select_ms", "selection (Q.K, softmax, vote, top-k)", dict(color=select, ls=":", marker="^"))):
        ax.plot(x, [r[key] for r in rows], label=label, ms=6, **style)
    ax.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="ms per layer and decode step",
           title=f"one 7B-like layer (32 query / 8 KV heads, dim 128, fp16), {gpu['device']}")
    ax.title.set_fontsize(9)
    _fit_x(ax, x, labels=[f"{c // 1024}k" for c in x])
    legend_outside(ax, fontsize=8)
    fig.tight_layout()
    return fig


STREAM_LABELS = {"window": "window attention (0 sinks)", "recompute": "sliding window, re-computed",
                 "dense": "dense (the whole stream)"}


def _stream_kind(method: str) -> tuple[str, str]:
    """A StreamingLLM run's method kind (for ``line_style``) and legend label."""
    if method in STREAM_LABELS:
        return {"window": "window", "recompute": "recompute", "dense": "full"}[method], STREAM_LABELS[method]
    n = int(method.split()[0])  # "<n> sinks"
    return ("streaming", "4 sinks (StreamingLLM)") if n == 4 else ("other sinks", f"{n} sink{'s' if n > 1 else ''}")


def streamingllm_budget(record: dict):
    """Mean NLL after the first eviction against the cache budget: one line per sink count,
    with sliding-window recomputation and the full (dense) cache."""
    m = record["metrics"]
    rows = m["budget_table"]
    budgets = sorted({r["budget"] for r in rows})
    fig, ax = plt.subplots(figsize=(7.6, 4), dpi=110)
    for method in dict.fromkeys(r["method"] for r in rows):
        kind, label = _stream_kind(method)
        pts = sorted((r["budget"], r["nll"]) for r in rows if r["method"] == method)
        ax.plot(*zip(*pts), label=label, **{**line_style(kind), **({"marker": "o", "ms": 4} if kind == "full" else {})})
    streams = f"{m['n_streams']} stream{'s' if m['n_streams'] > 1 else ''}"
    ax.set(xscale="log", xlabel="KV cache budget (entries)", ylabel="mean NLL after the first eviction (nats/token)",
           title=f"{m['model']}, {streams} of {m['stream_tokens']} tokens, {record['provenance']['device']}")
    ax.title.set_fontsize(9)
    _fit_x(ax, budgets)
    legend_outside(ax, fontsize=8)
    fig.tight_layout()
    return fig


def streamingllm_stream(record: dict):
    """NLL along one long stream (means over bins of tokens) for each method; the training
    length marked where the stream passes it."""
    m = record["metrics"]["long_stream"]
    fig, ax = plt.subplots(figsize=(8.4, 4), dpi=110)
    for method, values in m["binned_nll"].items():
        kind, label = _stream_kind(method)
        x = [(i + 0.5) * m["bin"] for i in range(len(values))]
        ax.plot(x, values, label=label, **{**line_style(kind), "marker": "", "lw": 1.2})
    end = len(next(iter(m["binned_nll"].values()))) * m["bin"]
    ax.set_xlim(0, end)
    trained = m["trained_context"]
    if trained <= end:
        ax.axvline(trained, color="grey", lw=0.8)
        ax.text(trained, ax.get_ylim()[1], "training length ", fontsize=7, va="top", ha="right")
    note = "" if trained <= end else f"; training length {trained:,}, beyond this stream"
    ax.set(xlabel="position in the stream (tokens)", ylabel=f"mean NLL over {m['bin']}-token bins",
           title=f"budget {m['budget']} entries, {record['metrics']['model']}, {record['provenance']['device']}{note}")
    ax.title.set_fontsize(9)
    legend_outside(ax, fontsize=8)
    fig.tight_layout()
    return fig


def ems_needle(record: dict):
    """Needle heatmaps of every press at the paper's budget, 256 entries per head (or the
    largest run below it), beside the full cache."""
    budgets = record["metrics"]["budgets"]
    budget = max([b for b in budgets if b <= 256] or budgets)
    names = ["full"] + [f"{p} {budget}" for p in record["parameters"]["presses"]]
    return _needle_heatmaps(record, names, 5)


def _empty(values) -> bool:
    """A retrieval panel says nothing when no method, the full cache included, retrieved anything."""
    return not any(v for v in values if v == v)


def ems_budget(record: dict):
    """One panel per task: needles, key-value retrieval / threads, continuation NLL, against the
    budget (entries per KV head), a line per press; the full cache dashed. A retrieval task that
    no method answered, the full cache included, gets no panel (the title says so)."""
    m = record["metrics"]
    panels = [("needles", "needles retrieved", "needles in held-out code")]
    panels += [(f"kv hops={h}", "retrieved", "key-value retrieval" if h == 0 else
                f"thread of {h} hop{'s' if h > 1 else ''}") for h in m["kv_hops"]]
    if m.get("hub"):
        panels += [("hub", "answered", record["parameters"]["hub_dataset"])]
    table = [t for t in m["table"] if t["variant"] == ""]
    skipped = [title for key, _, title in panels if _empty(t[key] for t in table)]
    panels = [p for p in panels if p[2] not in skipped]
    panels += [("nll", "mean NLL (nats/token)", f"continuation after {m['ppl_context']} tokens")]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.9 * len(panels) + 1.6, 3.8), dpi=110, squeeze=False,
                             layout="constrained")
    full = next(t for t in table if t["method"] == "full")
    presses = list(dict.fromkeys(t["press"] for t in table if t["press"] != "full"))
    for ax, (key, ylabel, title) in zip(axes[0], panels):
        for press in presses:
            pts = sorted((t["budget"], t[key]) for t in table if t["press"] == press)
            ax.plot(*zip(*pts), label=press, **{**line_style(press), **({"zorder": 4} if press == "ems" else {})})
        ax.axhline(full[key], color=COLOURS["full"], ls="--", lw=1, label="full cache")
        ax.set(xscale="log", xlabel="budget (entries per KV head)", ylabel=ylabel, title=title)
        _fit_x(ax, m["budgets"])
        if key != "nll":
            ax.set_ylim(-0.04, 1.04)
    _outside_legend(fig, axes[0])
    note = f"\nnot drawn, nothing retrieved even with the full cache: {', '.join(skipped)}" if skipped else ""
    fig.suptitle(f"EMS and baselines, {m['model']}, {record['provenance']['device']}{note}", fontsize=9)
    return fig


def gemfilter_layers(record: dict):
    """Share of the needle's tokens that GemFilter's top-k keeps, against the selection layer,
    one line per context length (shades of one colour map: they are lengths, not methods), the
    chosen layer marked."""
    m = record["metrics"]
    rows = m["layer_recall"]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    layers = sorted({r["layer"] for r in rows})
    contexts = sorted({r["context_target"] for r in rows})
    shades = plt.get_cmap("viridis")([0.15 + 0.7 * i / max(len(contexts) - 1, 1) for i in range(len(contexts))])
    for shade, c in zip(shades, contexts):
        ax.plot(layers, [mean_or_nan(r["recall"] for r in rows if r["layer"] == l and r["context_target"] == c)
                         for l in layers], "-o", ms=3, color=shade, label=f"{c} tokens")
    ax.axvline(m["layer"], color=COLOURS["gemfilter"], ls="--", lw=1.2, label=f"chosen r = {m['layer']}")
    ax.set(xlabel="selection layer r", ylabel="needle tokens kept", ylim=(-0.02, 1.02),
           xlim=(layers[0] - 0.5, layers[-1] + 0.5), title=f"GemFilter's top-{m['k']} at each layer (essay needles)")
    legend_outside(ax, fontsize=8)
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
    fig, (ax, rel) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=110, layout="constrained")
    full = {c: mean_or_nan(r["seconds"] for r in rows if r["method"] == "full" and r["context_target"] == c)
            for c in contexts}
    seconds = []
    for name in methods:
        secs = [mean_or_nan(r["seconds"] for r in rows if r["method"] == name and r["context_target"] == c) for c in contexts]
        seconds += secs
        kind = name.split()[0]
        style = {**line_style(kind), "ls": "-", **({"marker": "o"} if kind == "full" else {})}
        ax.plot(contexts, secs, label=name, **style)
        rel.plot(contexts, [full[c] / s for c, s in zip(contexts, secs)], label=name, **style)
    ax.set(xscale="log", yscale="log", xlabel="prompt tokens", ylabel="seconds to the first token",
           title="time to first token, side by side")
    _plain_log_y(ax, seconds)
    rel.axhline(1, color="grey", lw=0.8)
    rel.set(xscale="log", xlabel="prompt tokens", ylabel="speed-up over the full prefill (x)",
            title="against the full prefill")
    for a in (ax, rel):
        _fit_x(a, contexts)
    _outside_legend(fig, (ax, rel))
    fig.suptitle(f"{m['model']}, {record['provenance']['device']}", fontsize=9)
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


RAZOR_FAMILIES = {"razor": "RazorAttention", "razor, no compensation": "RazorAttention, no compensation",
                  "razor, random heads": "RazorAttention, random heads", "ems": "EMS", "snapkv": "SnapKV",
                  "streaming": "StreamingLLM"}  # family in the table -> legend label


def razor_tradeoff(record: dict):
    """Essay needles retrieved and long-text NLL against the KV reduction (the share of entries
    dropped, over all heads), a line per method; the full cache dashed. The needle panel is not
    drawn when no method, the full cache included, found a needle (the title says so)."""
    m = record["metrics"]
    rows = {t["method"]: t for t in m["table"]}
    panels = [("essay", "essay needles retrieved", "needle in the essays"),
              ("nll", "mean NLL (nats/token)", f"continuation after {m['ppl_context']} tokens")]
    skipped = _empty(t["essay"] for t in m["table"])
    panels = panels[1:] if skipped else panels
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1.6, 3.8), dpi=110, squeeze=False,
                             layout="constrained")
    for ax, (key, ylabel, title) in zip(axes[0], panels):
        for name, label in RAZOR_FAMILIES.items():
            pts = sorted((t["reduction"], t[key]) for t in m["table"] if t["family"] == name)
            if pts:
                ax.plot(*zip(*pts), label=label, **line_style(name))
        ax.axhline(rows["full"][key], color=COLOURS["full"], ls="--", lw=1, label="full cache")
        ax.set(xlabel="KV entries dropped (share of the full cache)", ylabel=ylabel, title=title)
        _fit_x(ax, m["reductions"], log=False, labels=[f"{r:.0%}" for r in m["reductions"]])
        if key == "essay":
            ax.set_ylim(-0.04, 1.04)
    _outside_legend(fig, axes[0])
    note = "\nneedle panel not drawn: no method found a needle, the full cache included" if skipped else ""
    fig.suptitle(f"RazorAttention at equal entries held, {m['model']}, {record['provenance']['device']}{note}", fontsize=9)
    return fig
