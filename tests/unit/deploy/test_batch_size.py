"""The UDF's max batch size, chosen from the latency per row measured on the deploy pod."""

import pytest
from floe_trainer.deploy import (
    BATCH_TIME_LIMIT_S,
    BATCH_TIME_SHARE,
    MAX_BATCH_SIZE,
    TooSlowError,
    choose_max_batch_size,
)

BUDGET = BATCH_TIME_LIMIT_S * BATCH_TIME_SHARE  # 30 s of Snowflake's 60


@pytest.mark.parametrize(
    ("seconds_per_row", "expected"),
    [
        (0.5, 60),  # 60 rows fill the 30 s budget
        (0.7, 42),  # rounded down: 43 rows would take 30.1 s
        (29.0, 1),
        (30.0, 1),
        (0.001, MAX_BATCH_SIZE),  # memory caps what time would allow
    ],
)
def test_the_largest_batch_that_ends_within_the_budget(seconds_per_row, expected):
    chosen = choose_max_batch_size(seconds_per_row)
    assert chosen == expected
    assert chosen * seconds_per_row <= BUDGET < BATCH_TIME_LIMIT_S


@pytest.mark.parametrize("seconds_per_row", [30.01, 120.0])
def test_a_model_that_cannot_score_one_row_in_time_is_refused(seconds_per_row):
    with pytest.raises(TooSlowError, match="not even one row fits") as refused:
        choose_max_batch_size(seconds_per_row)
    assert refused.value.reason == "TooSlowForBatchLimit" and "maxNewTokens" in str(refused.value)
