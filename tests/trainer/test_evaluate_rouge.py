"""The evaluation's ROUGE equals rouge_score's RougeScorer (ROUGE-L's longest common subsequence is counted on
bit vectors instead of rouge_score's table)."""

import random
import subprocess
import sys
import textwrap

import pandas as pd
from floe_trainer import rouge
from rouge_score import rouge_scorer

from .conftest import NEWS_CSV


def table_lcs(a: list[str], b: list[str]) -> int:
    """The textbook dynamic programme, as rouge_score computes it."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_bit_vector_lcs_equals_the_table():
    rng = random.Random(0)
    for _ in range(300):  # small alphabets: many repeats; lengths past 64 bits
        a = rng.choices("abcde", k=rng.randrange(0, 90))
        b = rng.choices("abcdef", k=rng.randrange(0, 90))
        assert rouge.lcs_length(a, b) == table_lcs(a, b)


def test_rouge_scores_equal_rouge_scorer_on_the_news_sample():
    frame = pd.read_csv(NEWS_CSV).dropna().head(60)
    rng = random.Random(1)
    references = list(frame["text"])
    # predictions that share words and word order with the references to different degrees, one empty
    predictions = [" ".join(rng.sample(words, len(words)) if i % 3 == 0 else words[: rng.randrange(len(words))])
                   for i, words in enumerate(t.split()[:120] for t in frame["ctext"])]
    predictions[5] = ""
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, reference in zip(predictions, references, strict=True):
        for key, score in scorer.score(reference, prediction).items():
            sums[key] += score.fmeasure
    expected = {key: round(value / len(predictions), 4) for key, value in sums.items()}
    assert rouge.rouge_scores(predictions, references) == expected
    assert 0 < expected["rougeL"] < expected["rouge1"] < 1


def test_the_scorer_is_imported_beside_training_not_in_the_evaluation():
    """Importing the ROUGE module does not import its scorer (nltk, seconds); the trainer has a thread import it
    while its step loop runs, not in the final evaluation."""
    probe = textwrap.dedent("""
        import sys, threading
        from floe_trainer import rouge
        assert "nltk" not in sys.modules
        rouge.import_scorer_in_background()
        [importer] = [t for t in threading.enumerate() if t.name == "import-rouge-scorer"]
        importer.join()
        assert {"nltk.stem.porter", "rouge_score.tokenize", "rouge_score.scoring"} <= sys.modules.keys()
    """)
    subprocess.run([sys.executable, "-c", probe], check=True)
