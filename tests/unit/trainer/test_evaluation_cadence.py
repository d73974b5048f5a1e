from floe_trainer.config import EvaluationEvery
from floe_trainer.trainer import AUTO_EVALUATION_MIN_S, EvaluationCadence


def test_every_n_steps_or_epochs_is_a_count():
    steps = EvaluationCadence(EvaluationEvery(steps=50), started=0.0)
    assert [s for s in range(1, 201) if steps.due_by_count(s, epoch=0, epoch_done=False)] == [50, 100, 150, 200]
    assert not steps.due_by_time(1e9)
    epochs = EvaluationCadence(EvaluationEvery(epochs=2), started=0.0)
    assert [e for e in range(6) if epochs.due_by_count(10, epoch=e, epoch_done=True)] == [1, 3, 5]
    assert not epochs.due_by_count(10, epoch=1, epoch_done=False)


def test_every_n_minutes_counts_from_the_last_evaluation():
    cadence = EvaluationCadence(EvaluationEvery(minutes=5), started=1000.0)
    assert not cadence.due_by_time(1000.0 + 299) and cadence.due_by_time(1000.0 + 300)
    assert not cadence.due_by_count(100, epoch=0, epoch_done=True)


def test_automatic_cadence_keeps_evaluation_near_a_tenth_of_the_time():
    cadence = EvaluationCadence(EvaluationEvery(), started=0.0)
    assert not cadence.due_by_count(100, epoch=0, epoch_done=True)
    assert not cadence.due_by_time(AUTO_EVALUATION_MIN_S - 1) and cadence.due_by_time(AUTO_EVALUATION_MIN_S)
    cadence.evaluated(started=600.0, ended=720.0)  # two minutes: the next one after nine times that
    assert not cadence.due_by_time(720.0 + 9 * 120.0 - 1) and cadence.due_by_time(720.0 + 9 * 120.0)
