"""Lookahead's trie: prompt n-grams draft their continuations, and are forgotten at the next
query; output n-grams are kept."""
from tokenworks.speculative import Lookahead


def branches(tree):
    """Root-to-leaf token paths of a draft tree (root excluded)."""
    leaves = set(range(1, len(tree))) - set(tree.parents)
    out = []
    for leaf in leaves:
        path, node = [], leaf
        while node > 0:
            path.append(tree.tokens[node])
            node = tree.parents[node]
        out.append(path[::-1])
    return sorted(out)


def test_prompt_ngrams_draft_their_continuations():
    la = Lookahead(decoding_length=16, branch_length=4)
    la.start([1, 2, 3, 4, 5, 6, 1, 2, 9])
    # after ...(x, 1): what followed 1 in the prompt, under the root
    assert branches(la.draft([7, 1])) == [[2, 3, 4, 5], [2, 9]]
    # the two-token query (6, 1) comes first: 2 9 follows "6 1"
    tree = la.draft([6, 1])
    assert tree.tokens[1:3] == [2, 9] and tree.parents[1:3] == [0, 1]


def test_budget_and_depth_limits():
    la = Lookahead(decoding_length=3, branch_length=2)
    la.start(list(range(10)) + [0, 11, 12, 13] + [0, 21, 22])
    tree = la.draft([0])
    assert len(tree) == 4 and max(tree.depths()) <= 2


def test_input_forgotten_output_kept():
    la = Lookahead(decoding_length=8, branch_length=3)
    la.start([1, 2, 3, 4])
    tree = la.draft([1])
    context = [1, 2, 3, 4]
    for step in ([51, 52, 53], [54, 55], [56]):  # generated tokens, a step at a time
        context += step
        la.update(tree, None, [0] * len(step), context)
    la.start([9, 9])  # next query: prompt n-grams of the last one are gone
    assert branches(la.draft([1])) == []
    assert branches(la.draft([52])) == [[53, 54, 55]]  # branch_length deep


def test_sized_tree_is_a_best_first_subtree_of_the_retrieval():
    """With a measured cost the verified tree is a subtree of what the paper's retrieval drafts:
    all of it when verification is free, the root alone when every token costs a step."""
    from tokenworks.speculative.cost import StepCost

    prompt = [1, 2, 3, 4, 1, 2, 3, 5, 1, 2, 3, 4, 1, 2]
    paper, free, dear = (Lookahead(decoding_length=16, branch_length=4, cost=c)
                         for c in (None, StepCost.flat(), lambda T, L: float(T)))
    for la in (paper, free, dear):
        la.start(prompt)
    full = paper.draft(prompt)
    assert len(full) > 2
    sized = free.draft(prompt)
    assert sorted(zip(sized.tokens, sized.depths())) == sorted(zip(full.tokens, full.depths()))
    assert len(dear.draft(prompt)) == 1
