"""What verification accepts as a summary: not blank, not the input echoed, no more words than tokens allowed."""

import pytest
from floe_trainer.deploy import implausible

ARTICLE = "The city council approved a new budget on Tuesday that raises spending on public transport."


@pytest.mark.parametrize(
    ("summary", "why"),
    [
        ("council approves budget for transport", None),
        ("budget budget budget", None),  # rough, as a tiny model writes, but an answer
        ("", "is blank"),
        (" \n\t", "is blank"),
        (f"  {ARTICLE} ", "repeats the input"),
        (" ".join(["word"] * 9), "has 9 words, more than maxNewTokens (8) tokens"),
        (" ".join(["word"] * 8), None),
    ],
)
def test_a_summary_is_plausible_or_says_why_not(summary, why):
    assert implausible(ARTICLE, summary, max_new_tokens=8) == why
