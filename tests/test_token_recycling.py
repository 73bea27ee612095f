"""Token Recycling's drafter: the matrix fill (one gather per depth) and the recycling update."""
import pytest
import torch

from tokenworks.speculative import DraftTree, TokenRecycling, generate, make_drafter
from tokenworks.models import load
from tokenworks.speculative.cost import StepCost


def test_draft_follows_the_matrix():
    tr = TokenRecycling(vocab_size=50, k=3, template=[[0], [1], [0, 0], [0, 2], [1, 0], [0, 0, 1]])
    tr.A[7] = torch.tensor([20, 21, 22])
    tr.A[20] = torch.tensor([30, 31, 32])
    tr.A[21] = torch.tensor([40, 41, 42])
    tr.A[30] = torch.tensor([1, 2, 3])
    tree = tr.draft([5, 7])
    # root 7; [0]=A[7,0]=20; [1]=A[7,1]=21; [0,0]=A[20,0]=30; [0,2]=A[20,2]=32;
    # [1,0]=A[21,0]=40; [0,0,1]=A[30,1]=2
    assert tree.tokens == [7, 20, 21, 30, 32, 40, 2]
    assert tree.parents == [-1, 0, 0, 1, 1, 2, 3]


def test_update_recycles_every_node_last_write_wins():
    tr = TokenRecycling(vocab_size=10, k=2, template=[[0], [1]])
    tree = DraftTree([3, 4, 3], [-1, 0, 0])  # token 3 twice: node 2 wins
    logits = torch.tensor([[0., 1, 2, 3, 4, 5, 6, 7, 8, 9],
                           [9., 8, 7, 6, 5, 4, 3, 2, 1, 0],
                           [0., 0, 5, 0, 0, 0, 0, 0, 7, 0]])
    tr.update(tree, logits, [0], [3])
    assert tr.A[4].tolist() == [0, 1] and tr.A[3].tolist() == [8, 2]
    assert tr.A[5].tolist() == [0, 0]  # untouched rows stay zero


def test_state_is_kept_across_queries_and_runs_are_deterministic():
    model, tok = load("tw-micro", device="cpu", dtype=torch.float64)
    prompts = [tok(t)["input_ids"] for t in ("import os\nimport sys\n", "def f(x):\n    return x\n")]

    def run_all():
        drafter = make_drafter("token_recycling", model)
        return [generate(model, p, max_new_tokens=24, drafter=drafter).accepted for p in prompts], drafter

    (a, d1), (b, d2) = run_all(), run_all()
    assert a == b and torch.equal(d1.A, d2.A)
    assert d1.A.any(), "the matrix was never filled"


def test_automatic_tree_follows_the_cost():
    """template='auto': with a free verification the tree grows to max_nodes; when every token
    costs a full step no tree pays and it stays plain decoding; either way the slot statistics
    are learned from the probe, and the output is greedy's."""

    model, tok = load("tw-micro", device="cpu", dtype=torch.float64)
    ids = tok("import os\nimport sys\n\n\ndef main(argv):\n    for arg in argv:\n")["input_ids"]
    want = generate(model, ids, "greedy", max_new_tokens=48).tokens
    free = make_drafter("token_recycling", model, cost=StepCost.flat(), max_nodes=20)
    dear = make_drafter("token_recycling", model, cost=lambda T, L: float(T))
    for drafter in (free, dear):
        assert generate(model, ids, max_new_tokens=48, drafter=drafter).tokens == want
        assert sum(map(sum, drafter.stats.tries)) > 0
    assert len(free.template.parents) == 21 and len(dear.template.parents) == 1
    out = generate(model, ids, max_new_tokens=48, drafter=dear)
    assert set(out.drafted) == {0}


def test_prefill_logits_reach_the_drafter_at_each_tokens_last_occurrence():
    model, tok = load("tw-micro", device="cpu", dtype=torch.float64)
    ids = tok("x = 1\ny = x\nx = y\n")["input_ids"]
    assert len(set(ids[:-1])) < len(ids) - 1  # some token repeats

    class Recorder:  # a greedy drafter that reads the prompt
        reads_prompt = True

        def start(self, prompt):
            self.seen = None

        def prompt_logits(self, tokens, logits):
            self.seen = (tokens, logits)

        def draft(self, context):
            return DraftTree([context[-1]], [-1])

        def update(self, tree, logits, path, context):
            pass

    rec = Recorder()
    assert generate(model, ids, max_new_tokens=4, drafter=rec).tokens == generate(model, ids, max_new_tokens=4).tokens
    last = {t: i for i, t in enumerate(ids[:-1])}
    positions = sorted(last.values())
    tokens, logits = rec.seen
    assert tokens == [ids[i] for i in positions]
    with torch.no_grad():
        plain = model(torch.tensor([ids[:-1]])).logits[0]
    assert torch.allclose(logits, plain[positions])


def test_recycled_prompt_rows_are_the_prefill_top_k():
    tr = TokenRecycling(vocab_size=10, k=2, template=[[0]], recycle_prompt=True)
    logits = torch.tensor([[0., 1, 2, 3, 4, 5, 6, 7, 9, 8], [5., 0, 0, 0, 0, 0, 0, 0, 0, 6]])
    tr.prompt_logits([4, 7], logits)
    assert tr.A[4].tolist() == [8, 9] and tr.A[7].tolist() == [9, 0] and tr.A[3].tolist() == [0, 0]
    cost = StepCost.flat()
    assert TokenRecycling(10, cost=cost).reads_prompt  # "auto" recycles the prefill
    assert not TokenRecycling(10, template="2.2.2").reads_prompt  # the paper's tree: as the reference code
    assert not TokenRecycling(10, cost=cost, recycle_prompt=False).reads_prompt
    with pytest.raises(TypeError, match="recycle_prompt must be None, True or False"):
        TokenRecycling(10, cost=cost, recycle_prompt="yes")
