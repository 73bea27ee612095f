"""Redraw every figure and the README's generated tables from results/ and zoo/ alone.

    python reproduce/figures.py        (make figures)
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.pyplot as plt

from tokenworks.bytelevel import plots as bytelevel_plots
from tokenworks.decoding import plots as decoding_plots
from tokenworks.kvcache import plots as kvcache_plots
from tokenworks.metrics import plots as metrics_plots
from tokenworks.models import ZOO, ZOO_DIR
from tokenworks.models import plots as models_plots
from tokenworks.verdicts import STATUSES
from tokenworks.paths import REPO
from tokenworks.results import code_hashes, figure_path, model_hashes
from tokenworks.speculative import plots as speculative_plots
from tokenworks.transplant import plots as transplant_plots

# method -> {figure name: plotting function of a results record}
FIGURES = {"tensorbleu": {"speedup": metrics_plots.tensorbleu_speedup},
           "token_recycling": {"speedup": speculative_plots.speculative_speedup,
                               "accepted": speculative_plots.speculative_accepted,
                               "cost": speculative_plots.speculative_cost,
                               "sizes": speculative_plots.token_recycling_sizes},
           "lookahead": {"speedup": speculative_plots.speculative_speedup,
                         "accepted": speculative_plots.speculative_accepted,
                         "cost": speculative_plots.speculative_cost},
           "dyspec": {"trees": speculative_plots.dyspec_trees},
           "cntp": {"accuracy_cost": decoding_plots.cntp_accuracy_cost},
           "bytelevel": {"fim": bytelevel_plots.bytelevel_fim},
           "streamingllm": {"budget": kvcache_plots.streamingllm_budget, "stream": kvcache_plots.streamingllm_stream},
           "ems": {"budget": kvcache_plots.ems_budget, "needle": kvcache_plots.ems_needle, "essay": kvcache_plots.essay_needle},
           "tokenselect": {"needle": kvcache_plots.tokenselect_needle, "budget": kvcache_plots.tokenselect_budget,
                           "attention_time": kvcache_plots.tokenselect_attention_time,
                           "essay": kvcache_plots.essay_needle},
           "gemfilter": {"layers": kvcache_plots.gemfilter_layers, "essay": kvcache_plots.essay_needle,
                         "ttft": kvcache_plots.gemfilter_ttft},
           "razorattention": {"heads": kvcache_plots.razor_heads, "tradeoff": kvcache_plots.razor_tradeoff,
                              "essay": lambda record: kvcache_plots.essay_needle(record, ncols=4)},
           "omp_transplant": {"bpb": transplant_plots.omp_transplant_bpb}}
PUBLISHED = "full"  # the configuration the README and figures/ report
RETRIEVAL_TARGET = 0.9  # what tw-code must retrieve with the full cache (its training target)


def published_records():
    """(method, record) of every full record the README's table and figures/ report."""
    for method in FIGURES:
        path = REPO / "results" / method / f"{PUBLISHED}.json"
        if path.exists():
            yield method, json.loads(path.read_text())


def staleness(method: str, record: dict) -> str:
    """Why a results record no longer describes the repository: the parts of its code
    (``tokenworks.results.code_hashes``) or the models (``model_hashes``) whose hashes
    changed since it ran; "" while it is current."""
    prov = record["provenance"]
    if "code" not in prov or "models" not in prov:
        return "stale: predates code hashing"
    code, models = code_hashes(method), model_hashes(record["parameters"])
    changed = [part for part in code if (prov["code"] or {}).get(part) != code[part]]
    changed += [name for name in models if prov["models"].get(name) != models[name]]
    return f"stale: {', '.join(changed)} changed since this run; re-run pending" if changed else ""


def reproductions_table() -> str:
    rows = ["| paper | notebook | headline claim | this run | status | figure |",
            "|---|---|---|---|---|---|"]
    for method, record in published_records():
        s = record["metrics"]["summary"]
        figs = ", ".join(f"[{name}](figures/{method}_{name}.png)" for name in FIGURES[method]
                         if figure_path(method, name, PUBLISHED).exists())
        stale = staleness(method, record)
        status = s["status"] + (f" ({stale})" if stale else "")
        rows.append(f"| {s['paper']} | [{method}](notebooks/{method}.ipynb) | {s['claim']} | "
                    f"{s['ours']} | {status} | {figs} |")
    legend = [f"- **{label}**: {meaning}." for label, meaning in STATUSES.items()]
    return "\n".join(rows + ["", "Status (`tokenworks.verdicts`):", "", *legend])


def zoo_table() -> str:
    rows = ["| model | parameters | tokenizer | tokens seen | test bits/byte | retrieval @1000 / @1900: card format (shifted) | trained on |",
            "|---|---|---|---|---|---|---|"]
    code_probes, notes = None, []
    for name in ZOO:
        path = ZOO_DIR / name / "model_card.json"
        if not path.exists():
            continue
        c = json.loads(path.read_text())
        fmt = {f: {p["distance"]: p["accuracy"] for p in c.get("retrieval_probes", [])
                   if p.get("format", "card") == f} for f in ("card", "shifted")}
        probes = fmt["card"]
        probe = " / ".join(f"{probes[d]:.0%}" for d in sorted(probes)) or "n/a"
        if fmt["shifted"]:
            probe += " (" + " / ".join(f"{fmt['shifted'][d]:.0%}" for d in sorted(fmt["shifted"])) + ")"
        if name == "tw-code":
            code_probes, code_shifted = probes, fmt["shifted"]
        if "arith_accuracy" in c:
            a = c["arith_accuracy"]["test"]
            notes.append(f"{name}: greedy accuracy {a['accuracy']:.1%} on {a['n']} held-out arithmetic "
                         "problems (its bits/byte are on held-out problem text, not code).")
        rows.append(f"| [{name}](zoo/{name}/README.md) | {c['parameters'] / 1e6:.2f}M | "
                    f"{c['tokenizer']} ({c['config']['vocab_size']}) | "
                    f"{c['training']['tokens_seen_total'] / 1e6:.1f}M | {c['test']['bits_per_byte']:.3f} | "
                    f"{probe} | {c['provenance']['device']} |")
    if code_probes is not None:
        met = bool(code_probes) and min(code_probes.values()) >= RETRIEVAL_TARGET
        rows += ["", f"tw-code's retrieval target (at least {RETRIEVAL_TARGET:.0%} at both distances): "
                     + ("**met**." if met else "**not met yet** at "
                        + " and ".join(f"{d} tokens ({a:.0%})" for d, a in sorted(code_probes.items())
                                       if a < RETRIEVAL_TARGET)
                        + ": KV-cache and needle results that need retrieval that far back are "
                          "not meaningful on tw-code.")]
        if code_shifted:
            rows[-1] += (" In the shifted format (other names, one per constant, letter-and-digit values) it "
                         "retrieves " + " and ".join(f"{a:.0%} at {d}" for d, a in sorted(code_shifted.items()))
                         + ": the curriculum taught it the probe's format rather than in-context retrieval, so "
                           "no paper is judged on tw-code alone.")
    rows += [""] + notes if notes else []
    return "\n".join(rows)


def _fill(text: str, marker: str, body: str) -> str:
    pattern = re.compile(f"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def redraw() -> None:
    for method, record in published_records():
        for name, draw in FIGURES[method].items():
            fig = draw(record)
            if fig is None:  # an older record without this figure's data (re-run pending)
                continue
            fig.savefig(figure_path(method, name, PUBLISHED), bbox_inches="tight")  # titles and outside legends kept whole
            plt.close(fig)  # dozens of figures in one process
            print(f"figure: {figure_path(method, name, PUBLISHED).relative_to(REPO)}")
    cards = [json.loads((ZOO_DIR / n / "model_card.json").read_text()) for n in ZOO
             if (ZOO_DIR / n / "model_card.json").exists()]
    if cards:
        fig = models_plots.zoo_loss(cards)
        fig.savefig(REPO / "figures" / "zoo_loss.png", bbox_inches="tight")
        plt.close(fig)
    readme = REPO / "README.md"
    text = _fill(readme.read_text(), "reproductions", reproductions_table())
    readme.write_text(_fill(text, "zoo", zoo_table()))
    print("README.md tables regenerated from results/ and zoo/")


if __name__ == "__main__":
    redraw()
