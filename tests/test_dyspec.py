"""DySpec and self-drafts: lossless with every tree and draft, the dynamic tree is the best-first
tree of the draft's probabilities, the draft's tree-masked cache equals plain forwards, and bad
input is refused."""
import functools

import pytest
import torch

from tokenworks.models import load
from tokenworks.speculative import DySpec, generate, make_drafter
from tokenworks.speculative.dyspec import same_tokenizer
from tokenworks.speculative.self_draft import chain_rate, choose_layers, layer_agreement, self_draft
from tokenworks.speculative.cost import StepCost

CODE = "import os\nimport sys\n\n\ndef main(argv):\n    for arg in argv:\n        print(arg)\n"


@functools.cache
def model64(name):
    return load(name, device="cpu", dtype=torch.float64)


@pytest.mark.parametrize("tree", ["dynamic", "static", "chain"])
@pytest.mark.parametrize("draft", ["self", "tw-code-draft"])
def test_lossless_with_every_tree_and_draft(tree, draft):
    model, tok = model64("tw-code")
    drafter = make_drafter("dyspec", model, tree=tree, budget=6,
                           **({"layers": 2} if draft == "self" else {"draft": model64(draft)[0]}))
    for text in (CODE, "class Stack:\n    def push(self, x):\n"):
        ids = tok(text)["input_ids"]
        want = generate(model, ids, "greedy", max_new_tokens=30).tokens
        out = generate(model, ids, max_new_tokens=30, drafter=drafter)  # state kept across prompts
        assert out.tokens == want
        assert set(out.drafted) == {6}


@torch.no_grad()
def _logp(model, ids):
    return model(torch.tensor([ids])).logits[0, -1].log_softmax(-1)


def test_dynamic_tree_is_best_first_under_draft_probabilities():
    """width=1: every node's value (sum of draft log-probs on its path, from plain forwards
    without a cache) is at least that of every top-k child left out."""
    model, tok = model64("tw-code")
    draft = self_draft(model, 2)
    drafter = DySpec(model, draft, budget=7, k=3, width=1)
    context = tok(CODE)["input_ids"]
    tree = drafter.draft(context)
    assert len(tree) == 8
    paths = {0: []}
    for i in range(1, len(tree)):
        paths[i] = paths[tree.parents[i]] + [tree.tokens[i]]
    value = {0: 0.0}
    left_out = []
    for i in range(len(tree)):
        logp = _logp(draft, context + paths[i])
        children = {tree.tokens[j] for j in range(1, len(tree)) if tree.parents[j] == i}
        for lp, t in zip(*logp.topk(3)):
            if int(t) in children:
                j = next(j for j in range(1, len(tree)) if tree.parents[j] == i and tree.tokens[j] == int(t))
                value[j] = value[i] + float(lp)
            else:
                left_out.append(value.get(i, 0.0) + float(lp))
    assert len(value) == len(tree)  # every node is a top-3 child of its parent
    assert min(v for i, v in value.items() if i) >= max(left_out) - 1e-9


def test_batched_draft_forwards_match_plain_forwards():
    """width=4: the tree-masked draft cache gives each node the distribution a plain forward
    over its root path gives; and the chain is the draft's own greedy continuation."""
    model, tok = model64("tw-code")
    draft = self_draft(model, 2)
    context = tok(CODE)["input_ids"]
    tree = DySpec(model, draft, budget=9, k=3, width=4).draft(context)
    for i in range(1, len(tree)):
        path, j = [], i
        while j:
            path.insert(0, tree.tokens[j])
            j = tree.parents[j]
        parent_path = path[:-1]
        assert tree.tokens[i] in _logp(draft, context + parent_path).topk(3).indices.tolist()
    chain = DySpec(model, draft, budget=5, tree="chain").draft(context)
    assert chain.parents == [-1, 0, 1, 2, 3, 4]
    ids = list(context)
    for t in chain.tokens[1:]:
        assert t == int(_logp(draft, ids).argmax())
        ids.append(t)


def test_self_draft_is_the_first_layers_and_shares_weights():
    model, tok = model64("tw-code")
    ids = tok(CODE)["input_ids"]
    draft = self_draft(model, 1)
    assert model.config.num_hidden_layers == 4 and draft.config.num_hidden_layers == 1
    assert draft.lm_head.weight.data_ptr() == model.lm_head.weight.data_ptr()
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
        exit1 = model.lm_head(model.model.norm(out.hidden_states[1]))
        assert torch.allclose(draft(torch.tensor([ids])).logits, exit1)
        assert torch.equal(model(torch.tensor([ids])).logits, out.logits)  # the target is untouched
    agree = layer_agreement(model, [ids])
    assert len(agree) == 3 and all(0 <= a <= 1 for a in agree)
    chosen = choose_layers(model, [ids], StepCost.flat(), cache_len=16)
    assert [r["layers"] for r in chosen["rows"]] == [1, 2, 3] and all(r["chain"] >= 1 for r in chosen["rows"])
    best = max(chosen["rows"], key=lambda r: r["rate"])
    assert chosen["layers"] == best["layers"] and chosen["pays"] == (best["rate"] > chosen["greedy_rate"] == 1.0)


def test_chain_rate_pays_only_above_plain_decoding():
    flat = StepCost.flat()
    assert chain_rate(1.0, 0.0, flat, 16, max_len=16) == (17.0, 16)  # free drafts, all accepted
    assert chain_rate(0.0, 0.5, flat, 16) == (1 / 1.5, 1)  # nothing accepted: below greedy's 1.0
    rate, g = chain_rate(0.8, 0.25, flat, 16)
    assert rate == max(sum(0.8 ** i for i in range(n + 1)) / (0.25 * n + 1) for n in range(1, 17)) > 1


def test_bad_input_is_refused():
    model, tok = model64("tw-code")
    other, other_tok = model64("tw-code-v2")
    with pytest.raises(ValueError, match="must be an int >= 1, got 0"):
        make_drafter("dyspec", model, budget=0)
    with pytest.raises(ValueError, match="must be an int >= 1, got 2.5"):
        make_drafter("dyspec", model, budget=2.5)
    with pytest.raises(ValueError, match="tokenizers differ"):
        make_drafter("dyspec", model, draft=other)
    with pytest.raises(ValueError, match="tokenizer differs from the target's"):
        same_tokenizer(tok, other_tok)
    for layers in (0, 4, -1):
        with pytest.raises(ValueError, match="keeps 1 to 3 of LlamaForCausalLM's 4 layers"):
            make_drafter("dyspec", model, layers=layers)
    with pytest.raises(ValueError, match="not both"):
        make_drafter("dyspec", model, layers=1, draft=model64("tw-code-draft")[0])
    with pytest.raises(ValueError, match="unknown tree 'wide'"):
        make_drafter("dyspec", model, tree="wide")
    with pytest.raises(ValueError, match="pass the target model"):
        make_drafter("dyspec", draft=model)
