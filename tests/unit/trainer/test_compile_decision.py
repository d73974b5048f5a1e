from floe_trainer.trainer import COMPILE_SECONDS, COMPILE_SPEEDUP, compiling_pays


def test_compiling_pays_only_when_the_speed_up_repays_the_compilation():
    # Break-even: eager time left t with t - t / speed-up == compile time.
    break_even = COMPILE_SECONDS / (1 - 1 / COMPILE_SPEEDUP)
    assert not compiling_pays(140.0)  # the default t5-small job on one H200 (bench/results/job.md): eager is sooner
    assert not compiling_pays(break_even * 0.99)
    assert compiling_pays(break_even * 1.01)
    assert compiling_pays(3600.0)
