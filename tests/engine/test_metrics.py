import random

import pytest

from engine.sample.metrics import (distinct_n, eval_metrics, mattr, repetition_n, text_metrics, ttr,
                            words)


def test_words_keep_inner_apostrophes_and_split_on_punctuation_and_underscores():
    assert words("Didn't the cat_dog run?  3 times -- 'quoted' Tom's.") == [
        "didn't", "the", "cat", "dog", "run", "3", "times", "quoted", "tom's"]
    assert words("Émile und Jürgen") == ["émile", "und", "jürgen"]


def test_ttr_is_unique_words_over_words():
    assert ttr(words("the cat and the dog and the bird")) == pytest.approx(5 / 8)
    assert ttr([]) == 0.0


def test_mattr_shorter_than_window_is_plain_ttr():
    ws = words("the cat and the dog and the bird")
    assert mattr(ws) == ttr(ws)
    assert mattr([]) == 0.0


def test_mattr_matches_brute_force_windows():
    rng = random.Random(0)
    ws = [rng.choice("abcdefghijklmnopqrst") for _ in range(500)]
    brute = sum(len(set(ws[i:i + 50])) / 50 for i in range(len(ws) - 49)) / (len(ws) - 49)
    assert mattr(ws) == pytest.approx(brute)
    assert mattr(ws, window=3) == pytest.approx(
        sum(len(set(ws[i:i + 3])) / 3 for i in range(len(ws) - 2)) / (len(ws) - 2))


def test_distinct_pools_samples_but_ngrams_never_span_two_samples():
    a, b = words("a b c"), words("a b d")
    assert distinct_n([a, b], 1) == pytest.approx(4 / 6)
    assert distinct_n([a, b], 2) == pytest.approx(3 / 4)   # ab, bc, ab, bd; no "c a"
    assert distinct_n([a, b], 3) == pytest.approx(2 / 2)
    assert distinct_n([[]], 2) == 0.0


def test_repetition_4_counts_repeated_4grams_within_a_sample():
    ws = words("a b c d a b c d")  # abcd bcda cdab dabc abcd: 5 grams, 4 unique
    assert repetition_n(ws, 4) == pytest.approx(0.2)
    assert repetition_n(words("one two three"), 4) == 0.0
    loop = words("the dog ran " * 30)
    assert repetition_n(loop, 4) > 0.9


def test_eval_metrics_average_per_sample_and_pool_distinct():
    texts = ["a b c d a b c d", "x y z"]
    m = eval_metrics(texts)
    assert m["words"] == 11
    assert m["ttr"] == pytest.approx((4 / 8 + 1) / 2)
    assert m["repetition_4"] == pytest.approx((0.2 + 0.0) / 2)
    assert m["distinct_1"] == pytest.approx(7 / 11)
    assert set(text_metrics("x")) == set(m) == {
        "ttr", "mattr", "distinct_1", "distinct_2", "distinct_3", "repetition_4", "words"}
    assert eval_metrics([])["words"] == 0


def _stories(shared_data, n=60):
    text = (shared_data / "tinystories" / "val.txt").read_text(encoding="utf-8")
    stories = [s.strip() for s in text.split("<|endoftext|>") if len(s.split()) > 60]
    assert len(stories) >= n
    return stories[:n]


def test_ttr_and_mattr_agree_with_lexicalrichness_on_tinystories(shared_data):
    """An independent implementation (lexicalrichness) on real TinyStories text.

    lexicalrichness tokenises differently: it deletes digits and hyphens and turns every
    punctuation mark, apostrophes included, into a space ("didn't" -> "didn", "t"). So the
    fair comparison of the *measure* feeds it our word list (its tokenizer hook): then TTR
    and MATTR must agree exactly. With its own tokenizer the *words* differ slightly, so
    there we only check the scores stay close (contractions are a small share of words).
    """
    from lexicalrichness import LexicalRichness

    for story in _stories(shared_data):
        ours = words(story)
        lex = LexicalRichness(story, preprocessor=None, tokenizer=words)
        assert lex.words == len(ours)
        assert ttr(ours) == pytest.approx(lex.ttr, abs=1e-12)
        if len(ours) >= 50:
            assert mattr(ours) == pytest.approx(lex.mattr(window_size=50), abs=1e-12)
        own = LexicalRichness(story)  # its own preprocessing and tokenizer
        assert ttr(ours) == pytest.approx(own.ttr, abs=0.05)
