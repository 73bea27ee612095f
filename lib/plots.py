"""Figures drawn from results records (``results/<method>/<config>.json``), never from live runs."""
from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker


def _log_ticks(ax, ticks, labels=None):
    """Ticks at the measured x values of a log axis, without minor labels."""
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(ticks, labels=labels or [str(t) for t in ticks])


def tensorbleu_speedup(record: dict):
    """Speed-up over the NLTK loop against batch size: colour per counting, line style per length."""
    rows = record["metrics"]["benchmark"]
    labels = {"sort": "ours (packed keys, sort)", "unique": "paper (unique + bincount)",
              "triton": "Triton kernel"}
    colours = {"sort": "tab:blue", "unique": "tab:red", "triton": "tab:green"}
    lengths = sorted({r["length"] for r in rows})
    styles = ["-o", "--s", ":^", "-.v"]
    batches = sorted({r["batch"] for r in rows})
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    for variant in labels:
        for length, style in zip(lengths, styles):
            pts = sorted((r["batch"], r["nltk_s"] / r[f"{variant}_s"]) for r in rows
                         if r["length"] == length and r.get(f"{variant}_s"))
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, style, color=colours[variant], label=f"{labels[variant]}, {length} tokens")
    ax.axhline(1, color="grey", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="speed-up over the NLTK loop (x)",
           title=f"TensorBLEU, {record['provenance']['device']}")
    _log_ticks(ax, batches)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def zoo_loss(cards: list[dict]):
    """Training loss of each zoo model against tokens seen."""
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    for card in cards:
        hist = card["training"]["loss_history"]
        stages = card["training"]["stages"]
        tokens_per_step = {s: b * s for s, b, _ in stages}
        seen, xs = 0, []
        prev = 0
        for step, _, seq in hist:
            seen += (step - prev) * tokens_per_step[seq]
            prev = step
            xs.append(seen / 1e6)
        ax.plot(xs, [h[1] for h in hist], label=card["name"], lw=1)
    ax.set(xlabel="training tokens (M)", ylabel="cross-entropy (nats/token)", title="Zoo training loss")
    ax.legend()
    fig.tight_layout()
    return fig


def speculative_speedup(record: dict):
    """Two panels per category: wall-clock speed-up over greedy, and mean accepted tokens."""
    rows = [r for r in record["metrics"]["by_method"] if r["method"] != "greedy"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cats = list(dict.fromkeys(r["category"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        by_cat = {r["category"]: r for r in rows if r["method"] == m}
        x = [c + (i - (len(methods) - 1) / 2) * width for c in range(len(cats))]
        colour = f"C{i}"  # the same colour for a method in both panels
        axes[0].bar(x, [by_cat[c]["speedup"] for c in cats], width, label=m, color=colour)
        if any(by_cat[c]["mean_accepted"] for c in cats):
            axes[1].bar(x, [by_cat[c]["mean_accepted"] or 0 for c in cats], width, label=m, color=colour)
    axes[0].axhline(1, color="grey", lw=0.8)
    axes[0].set(ylabel="speed-up over our greedy loop (x)", title="wall clock, side by side")
    axes[1].axhline(1, color="grey", lw=0.8)
    axes[1].set(ylabel="mean accepted tokens per step", title="tokens per verification step (ours only)")
    for ax in axes:
        ax.set_xticks(range(len(cats)), cats, rotation=20)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{record['parameters']['model']}, {record['provenance']['device']}", fontsize=9)
    fig.tight_layout()
    return fig


def speculative_accepted(record: dict):
    """Histogram of tokens accepted per step (bonus token included), one line per method."""
    hist = record["metrics"]["accepted_histogram"]
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    for m, counts in hist.items():
        total = sum(counts.values())
        xs = sorted(int(k) for k in counts)
        ax.plot(xs, [counts[str(x)] / total for x in xs], "-o", ms=3, label=m)
    ax.set(yscale="log", xlabel="tokens accepted in one step", ylabel="share of steps",
           title="Accepted length per verification step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def cntp_accuracy_cost(record: dict):
    """Accuracy (95% bootstrap interval) against model forwards per answer, one panel per task."""
    tasks = record["metrics"]["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4), dpi=110, squeeze=False)
    colours = {"greedy": "black", "sample": "tab:blue", "cntp": "tab:red", "sc": "tab:cyan",
               "cntp_sc": "tab:orange"}
    for ax, (task, res) in zip(axes[0], tasks.items()):
        for s in res["summary"]:
            x, y = s["forwards_per_answer"], 100 * s["accuracy"]
            err = [[y - 100 * s["ci_low"]], [100 * s["ci_high"] - y]]
            ax.errorbar([x], [y], yerr=err, fmt="o", capsize=3, color=colours[s["strategy"]],
                        label=s["strategy"])
        ax.set(xscale="log", xlabel="model forwards per answer (log)", ylabel="accuracy (%)",
               title=f"{task} ({res['model']}, {res['n']} items)")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=8)
    fig.suptitle(f"CNTP vs. greedy, sampling and self-consistency, {record['provenance']['device']}",
                 fontsize=9)
    fig.tight_layout()
    return fig


def byte_level_fim(record: dict):
    """Edit similarity of the filled middle (95% interval) per FIM format and decoding method,
    and model calls per generated byte."""
    rows = record["metrics"]["fim"]["summary"]
    colours = {"token": "tab:gray", "healing": "tab:blue", "byte": "tab:red", "ensemble": "tab:orange"}
    fig, (ax, cost) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    labels = [f"{r['format'].upper()}\n{r['method']}" for r in rows]
    for i, r in enumerate(rows):
        y = r["edit_similarity"]
        ax.bar(i, y, color=colours[r["method"]], yerr=[[y - r["edit_low"]], [r["edit_high"] - y]], capsize=3)
        cost.bar(i, r["calls_per_byte"], color=colours[r["method"]])
    for a in (ax, cost):
        a.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set(ylabel="edit similarity of the middle", ylim=(0, 1),
           title=f"random-span FIM, {record['metrics']['fim']['model']}, {rows[0]['n']} items")
    cost.set(ylabel="model calls per generated byte", title="cost")
    fig.suptitle(f"token-level vs. token healing vs. exact byte-level decoding, {record['provenance']['device']}",
                 fontsize=9)
    fig.tight_layout()
    return fig


def _mean(values):
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _needle_heatmaps(record: dict, names: list[str], ncols: int):
    """Needle accuracy over context length x depth, one heatmap per method in ``names``."""
    m = record["metrics"]
    contexts = sorted({r["context_target"] for r in m["needles"]})
    depths = sorted({r["depth"] for r in m["needles"]})
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 3.2 * nrows + 0.4), dpi=110, squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        grid = [[_mean(r["ok"] for r in m["needles"] if r["method"] == name and r["context_target"] == c
                       and r["depth"] == d) for c in contexts] for d in depths]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="lower")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(contexts)), [str(c) for c in contexts], fontsize=8)
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths], fontsize=8)
        ax.set(xlabel="context (tokens)", ylabel="needle depth", title=name)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="retrieved")
    fig.suptitle(f"needle in a haystack of code, {m['model']}, {record['provenance']['device']}", fontsize=9)
    return fig


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
        acc.plot(x, [_mean(r["ok"] for r in m["needles"] if r["method"] == n) for _, n in names], "-o",
                 color=colour, label=label)
        nll.plot(x, [_mean(r["nll"] for r in m["perplexity"] if r["method"] == n) for _, n in names], "-o",
                 color=colour, label=label)
    acc.axhline(_mean(r["ok"] for r in m["needles"] if r["method"] == "full"), color="k", ls="--", label="full cache")
    nll.axhline(_mean(r["nll"] for r in m["perplexity"] if r["method"] == "full"), color="k", ls="--", label="full cache")
    acc.set(xscale="log", xlabel="attended cache entries per query", ylabel="needles retrieved", ylim=(-0.02, 1.02),
            title="needle in a haystack")
    nll.set(xscale="log", xlabel="attended cache entries per query", ylabel="mean NLL (nats/token)",
            title=f"continuation after {m['ppl_context']} tokens")
    for a in (acc, nll):
        _log_ticks(a, budgets)
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
    _log_ticks(ax, x, [f"{c // 1024}k" for c in x])
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
    _log_ticks(ax, budgets)
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
    ax.text(m["trained_context"], ax.get_ylim()[1], " training rows", fontsize=7, va="top")
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
        _log_ticks(ax, m["budgets"])
        if key != "nll":
            ax.set_ylim(-0.02, 1.02)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    fig.suptitle(f"EMS and baselines, {m['model']}, {record['provenance']['device']}", fontsize=9)
    return fig
