"""The speculative family's verdicts (``tokenworks.speculative.verdicts``) on fabricated metrics
and on the committed full runs, and its figures' shared colours and outside legends."""
import json

import matplotlib
import pytest

matplotlib.use("Agg")

from tokenworks.paths import repo_root  # noqa: E402
from tokenworks.speculative import plots  # noqa: E402
from tokenworks.speculative import verdicts as v  # noqa: E402
from tokenworks.verdicts import STATUSES, judge, markdown  # noqa: E402
from records import is_current  # noqa: E402

WHERE = "CPU, 2 threads"


def _report(mismatches: int = 0, generations: int = 10) -> dict:
    return {"identical": generations - mismatches, "generations": generations,
            "mismatches": [{"prompt": i, "method": "x"} for i in range(mismatches)]}


def _row(method: str, speedup: float, accepted: float | None = None, nodes: float | None = None) -> dict:
    return {"method": method, "category": "all", "speedup": speedup, "mean_accepted": accepted, "tree_nodes": nodes}


def _tr(tree_accepted=2.8, pld_accepted=2.0, tree_speedup=2.2, hf_pld=1.5, mismatches=0) -> dict:
    """Token Recycling metrics: the paper's tree, prompt lookup and Hugging Face's methods."""
    return {"lossless": _report(mismatches),
            "by_method": [_row("hf_greedy", 1.0), _row("prompt_lookup", 1.6, pld_accepted, 7.0),
                          _row("hf_prompt_lookup", hf_pld), _row("token_recycling", 1.5, 1.9, 5.0),
                          _row("token_recycling:2.2.2", tree_speedup, tree_accepted, 80.0)]}


def _la(paper_speedup=2.1, mismatches=0) -> dict:
    return {"lossless": _report(mismatches),
            "by_method": [_row("hf_greedy", 1.0), _row("prompt_lookup", 1.8, 2.4, 7.0), _row("hf_prompt_lookup", 1.8),
                          _row("lookahead", 1.7, 2.7, 12.0), _row("lookahead:paper", paper_speedup, 3.2, 33.0)]}


def _dy(accepted=((1.2, 1.1), (2.3, 2.0)), speed=((0.9, 0.8), (0.6, 0.5)), mismatches=0) -> dict:
    """DySpec metrics: one pair, budgets 4 and 16, (dynamic, static) per budget."""
    trees = []
    for b, (acc, sp) in zip((4, 16), zip(accepted, speed)):
        for tree, a, s in (("dynamic", acc[0], sp[0]), ("static", acc[1], sp[1]), ("chain", 1.0, 0.3)):
            trees.append({"pair": "t + d", "tree": tree, "budget": b, "mean_accepted": a, "speedup": s})
    return {"trees": trees, "lossless": {"t + d": _report(mismatches)}}


def _held(claims) -> list:
    return [c.held for c in claims]


@pytest.mark.parametrize("metrics, label", [
    (_tr(), "reproduced"),
    (_tr(tree_speedup=0.6), "partly reproduced"),
    (_tr(tree_accepted=1.0, tree_speedup=0.6, mismatches=1), "not reproduced"),
])
def test_token_recycling_gives_each_label(metrics, label):
    assert judge(v.token_recycling(metrics, "m", WHERE)) == label


def test_token_recycling_tolerance_boundary_and_rankings():
    floor_accepted, floor_speedup = 0.9 * 2.70, 0.9 * 2.03
    assert _held(v.token_recycling(_tr(tree_accepted=floor_accepted), "m", WHERE))[1] is True
    assert _held(v.token_recycling(_tr(tree_accepted=floor_accepted - 0.01), "m", WHERE))[1] is False
    assert _held(v.token_recycling(_tr(tree_speedup=floor_speedup), "m", WHERE))[3] is True
    assert _held(v.token_recycling(_tr(tree_speedup=floor_speedup - 0.01), "m", WHERE))[3] is False
    # above prompt lookup: strictly more tokens per step, strictly faster than Hugging Face's
    assert _held(v.token_recycling(_tr(pld_accepted=2.8), "m", WHERE))[2] is False
    assert _held(v.token_recycling(_tr(hf_pld=2.2), "m", WHERE))[4] is False
    claims = v.token_recycling(_tr(), "m", WHERE)
    assert "90% of the paper's 2.70" in claims[1].rule and "90% of the paper's 2.03" in claims[3].rule
    assert WHERE in claims[3].rule and "GPU" in claims[3].rule  # where ours and the paper's speeds were measured


def test_token_recycling_speed_is_over_hugging_face_generate():
    metrics = _tr(tree_speedup=2.0)
    metrics["by_method"][0]["speedup"] = 1.2  # HF generate 1.2x our greedy loop: ours is 2.0 / 1.2 over it
    assert _held(v.token_recycling(metrics, "m", WHERE))[3] is False


def test_token_recycling_counts_the_size_sweep_in_lossless():
    metrics = {**_tr(), "sizes_lossless": _report(mismatches=1)}
    assert _held(v.token_recycling(metrics, "m", WHERE))[0] is False


def test_our_targets_are_context_not_claims():
    metrics = {**_tr(), "greedy_vs_hf": {"ours_tokens_per_s": 10.0, "hf_tokens_per_s": 20.0, "ratio": 0.5, "prompts": 2},
               "sizes": [{"nodes": 4, "speedup": 1.3, "mean_accepted": 1.6}, {"nodes": None, "speedup": 1.4, "mean_accepted": 1.7}],
               "cost": {"sizes": [1, 64, 81], "cache_lens": [256, 1024], "relative": [[1, 3, 4], [1, 4, 5]]}}
    claims = v.token_recycling(metrics, "m", WHERE)
    assert not any("target" in c.paper or "criterion" in c.paper for c in claims)
    context = v.token_recycling_context(metrics, WHERE)
    assert [name.split(",")[0] for name, _, _ in context] == ["Speed-up over our greedy loop", "Best fixed tree size",
                                                               "Cost of verifying the 80-node tree (81 tokens)",
                                                               "Our greedy loop vs. Hugging Face generate"]
    assert "5.0 one-token steps at a 1024-token cache" in context[2][2] and "outside 10%" in context[3][2]
    assert judge(claims) == "reproduced"  # a slow harness informs but does not decide


@pytest.mark.parametrize("metrics, label", [
    (_la(), "reproduced"), (_la(paper_speedup=1.3), "partly reproduced"),
    (_la(paper_speedup=1.3, mismatches=2), "not reproduced"),
])
def test_lookahead_gives_each_label(metrics, label):
    assert judge(v.lookahead(metrics, "m", WHERE)) == label


def test_lookahead_judges_speed_not_tokens_per_step():
    claims = v.lookahead(_la(), "m", WHERE)
    assert not any("tokens per step" in c.claim.lower() for c in claims)
    assert claims[1].held is True and _held(v.lookahead(_la(paper_speedup=0.9 * 2.06 - 0.01), "m", WHERE))[1] is False
    assert "2.06" in claims[1].rule and WHERE in claims[1].rule and "cold" in claims[1].rule
    assert claims[2].held is None  # production speed-up on private data: not measured, not counted
    assert any(name == "Mean accepted tokens per step" for name, _, _ in v.lookahead_context(_la(), WHERE))


@pytest.mark.parametrize("metrics, label", [
    (_dy(), "reproduced"),
    (_dy(accepted=((1.2, 1.1), (2.0, 2.3))), "partly reproduced"),
    (_dy(accepted=((1.0, 1.1), (2.0, 2.3)), speed=((0.7, 0.8), (0.5, 0.6)), mismatches=1), "not reproduced"),
])
def test_dyspec_gives_each_label(metrics, label):
    assert judge(v.dyspec(metrics, WHERE)) == label


def test_dyspec_needs_every_setting_and_leaves_the_offloaded_speedup_unmeasured():
    claims = v.dyspec(_dy(speed=((0.9, 0.8), (0.5, 0.5))), WHERE)  # a tie is not faster
    assert _held(claims) == [True, True, False, None]
    assert "every (pair, budget) setting" in claims[1].rule and "1 of 2" in claims[2].ours
    assert len(v.dyspec_context(_dy(), WHERE)) == 2


def test_lossless_with_no_generations_is_not_measured():
    assert v.lossless("yes", [_report(generations=0)]).held is None


def test_at_least_names_a_proxy_and_leaves_a_missing_number_unmeasured():
    c = v.at_least("c", "1.0 (Table 1)", 1.0, 0.95, "0.95", "ours", proxy="bits per byte for perplexity")
    assert c.held is True and "(proxy: bits per byte for perplexity)" in markdown([c])
    assert v.at_least("c", "1.0", 1.0, None, "-", "ours").held is None
    assert not any(c.proxy for c in v.token_recycling(_tr(), "m", WHERE) + v.lookahead(_la(), "m", WHERE)
                   + v.dyspec(_dy(), WHERE))  # every metric compared is the paper's own


def test_bad_metrics_say_what_to_do():
    with pytest.raises(ValueError, match="metrics lack \\['lossless'\\].*notebooks/token_recycling.ipynb"):
        v.token_recycling({"by_method": []}, "m", WHERE)
    metrics = _la()
    metrics["by_method"] = [r for r in metrics["by_method"] if r["method"] != "lookahead:paper"]
    with pytest.raises(ValueError, match="no 'all' row for \\['lookahead:paper'\\].*run every method"):
        v.lookahead(metrics, "m", WHERE)
    metrics = _dy()
    metrics["trees"][0]["tree"] = "sequoia"
    with pytest.raises(ValueError, match="unknown tree shapes \\['sequoia'\\]"):
        v.dyspec(metrics, WHERE)
    metrics = _dy()
    metrics["trees"] = [r for r in metrics["trees"] if not (r["tree"] == "static" and r["budget"] == 16)]
    with pytest.raises(ValueError, match="lack a dynamic or a static tree"):
        v.dyspec(metrics, WHERE)


def _record(stem: str, config: str = "full") -> dict:
    return json.loads((repo_root() / "results" / stem / f"{config}.json").read_text())


def _claims(stem: str, record: dict):
    p, m = record["parameters"], record["metrics"]
    where = f"CPU, {p['threads']} threads"
    return v.dyspec(m, where) if stem == "dyspec" else getattr(v, stem)(m, p["model"], where)


@pytest.mark.parametrize("stem", ["token_recycling", "lookahead", "dyspec"])
def test_the_committed_full_run_agrees_with_its_verdict(stem):
    record = _record(stem)
    label = judge(_claims(stem, record))
    assert label in STATUSES
    if is_current(stem, record):
        assert label == record["metrics"]["summary"]["status"]


# figures


@pytest.mark.parametrize("stem", ["token_recycling", "lookahead", "dyspec"])
@pytest.mark.parametrize("config", ["full", "smoke"])
def test_every_figure_keeps_method_colours_and_legends_outside(stem, config):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    figures = {"token_recycling": [plots.speculative_speedup, plots.speculative_accepted, plots.speculative_cost,
                                   plots.token_recycling_sizes],
               "lookahead": [plots.speculative_speedup, plots.speculative_accepted, plots.speculative_cost],
               "dyspec": [plots.dyspec_trees]}[stem]
    by_label = {text: name for name, text in plots.METHODS.items()}
    for draw in figures:
        fig = draw(_record(stem, config))
        fig.canvas.draw()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        assert len(legends) == 1, draw.__name__
        box = legends[0].get_window_extent()
        for ax in fig.axes:
            assert ax.has_data(), f"{draw.__name__}: an empty panel"
            assert not box.overlaps(ax.get_window_extent()), f"{draw.__name__}: the legend covers a panel"
        for text, handle in zip(legends[0].get_texts(), legends[0].legend_handles):
            if text.get_text() in by_label:  # a method: the same colour in every figure
                drawn = handle.get_facecolor() if isinstance(handle, Patch) else handle.get_color()
                assert matplotlib.colors.to_hex(drawn) == plots.COLORS[by_label[text.get_text()]], draw.__name__
        plt.close(fig)


def test_the_histogram_is_bars_and_unknown_methods_are_refused():
    import matplotlib.pyplot as plt

    fig = plots.speculative_accepted(_record("lookahead"))
    assert not fig.axes[0].get_lines() and fig.axes[0].patches
    plt.close(fig)
    with pytest.raises(ValueError, match="add it to METHODS"):
        plots.color("medusa")
    assert plots.color("token_recycling:16-node") == plots.COLORS["token_recycling:fixed"]
