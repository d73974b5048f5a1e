import pytest
from floe_trainer.batch_plan import MIN_STEPS_PER_EPOCH, BatchPlan, BatchPlanError, evaluation_batch, plan


def test_a_given_batch_size_is_kept_with_its_accumulation():
    assert plan(12, 3, None, world_size=2, fits=None, train_rows=4000) == BatchPlan(12, 3, 2)
    assert plan(12, None, None, world_size=1, fits=None, train_rows=4000) == BatchPlan(12, 1, 1)


def test_auto_takes_what_fits_rounded_down_for_tensor_cores():
    assert plan("auto", None, None, world_size=1, fits=100, train_rows=100_000) == BatchPlan(96, 1, 1)
    assert plan("auto", None, None, world_size=1, fits=5, train_rows=100_000) == BatchPlan(5, 1, 1)


def test_auto_keeps_an_epoch_long_enough_for_the_schedule():
    rows = 3600
    chosen = plan("auto", None, None, world_size=2, fits=512, train_rows=rows)
    assert rows // chosen.step_batch_size >= MIN_STEPS_PER_EPOCH
    assert chosen == BatchPlan(56, 1, 2)  # 3600 // (32 x 2) = 56


def test_an_effective_batch_is_met_exactly_with_the_fewest_micro_steps_that_fit():
    assert plan("auto", None, 256, world_size=2, fits=48, train_rows=4000) == BatchPlan(32, 4, 2)
    assert plan("auto", None, 256, world_size=2, fits=512, train_rows=4000) == BatchPlan(128, 1, 2)
    assert plan(16, None, 64, world_size=2, fits=None, train_rows=4000) == BatchPlan(16, 2, 2)


@pytest.mark.parametrize(("batch_size", "effective", "world", "message"), [
    (16, 40, 2, r"spec.training.effectiveBatchSize: 40 is not a multiple of spec.training.batchSize x processes "
         r"\(16 x 2\)"),
    ("auto", 5, 2, r"spec.training.effectiveBatchSize: 5 is not a multiple of the 2 processes"),
])
def test_an_effective_batch_that_cannot_be_met_names_the_fields(batch_size, effective, world, message):
    with pytest.raises(BatchPlanError, match=message):
        plan(batch_size, None, effective, world_size=world, fits=64, train_rows=4000)


def test_evaluation_batches_are_a_multiple_of_the_training_batch_on_a_gpu():
    assert evaluation_batch("auto", BatchPlan(104, 1, 1), on_gpu=True) == 416  # a 395-row split in one batch
    assert evaluation_batch("auto", BatchPlan(104, 1, 1), on_gpu=False) == 64
    assert evaluation_batch(32, BatchPlan(104, 1, 1), on_gpu=True) == 32
