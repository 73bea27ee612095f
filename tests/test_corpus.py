"""The corpus split is a pure function of the path; the corpus hash pins the contents."""
from tokenworks.models.corpus import Corpus, load_corpus, save_corpus, split_of, stdlib_corpus


def test_split_is_stable_and_roughly_90_5_5():
    paths = [f"pkg{i}/module{i}.py" for i in range(4000)]
    splits = [split_of(p) for p in paths]
    assert splits == [split_of(p) for p in paths]
    assert 0.87 < splits.count("train") / 4000 < 0.93
    assert split_of("json/decoder.py") == split_of("json/decoder.py")


def test_stdlib_corpus_roundtrip(tmp_path):
    c = stdlib_corpus()
    s = c.summary()
    assert s["train_files"] > 1000 and s["test_files"] > 20 and len(c.sha256) == 64
    names = {split: {p for p, _ in files} for split, files in c.files.items()}
    assert not names["train"] & names["test"] and not names["train"] & names["validation"]
    save_corpus(c, tmp_path / "c.json")
    again = load_corpus(tmp_path / "c.json")
    assert isinstance(again, Corpus) and again.sha256 == c.sha256
    assert again.texts("test") == c.texts("test")
