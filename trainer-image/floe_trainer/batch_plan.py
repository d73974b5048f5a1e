"""How many samples each process runs per micro-step, and how many micro-steps make one optimizer step.

`training.batchSize: auto` (the default) takes the largest micro-batch that fits the GPU, measured by
`probe_fitting_batch`; on CPU it is CPU_BATCH. `effectiveBatchSize` fixes the samples per optimizer step and
derives the gradient accumulation from the micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CPU_BATCH = 8
# auto never makes an epoch shorter than this many optimizer steps: on a small dataset the largest batch
# that fits would leave the learning-rate schedule a handful of steps.
MIN_STEPS_PER_EPOCH = 32
# The probe stops below this share of the GPU's memory: compiled blocks and generation need room of their own.
PROBE_MEMORY_SHARE = 0.8
TENSOR_CORE_MULTIPLE = 8
# Evaluation keeps no activations for a backward pass, so on a GPU `evaluation.batchSize: auto` is this many times
# the training batch (a whole validation split of a few hundred rows in one generation); on CPU, 64 rows.
EVALUATION_BATCH_FACTOR = 4
CPU_EVALUATION_BATCH = 64


class BatchPlanError(ValueError):
    """The batch settings cannot be met; the message names the fields."""


@dataclass(frozen=True)
class BatchPlan:
    batch_size: int  # per process per micro-step
    accumulation: int  # micro-steps per optimizer step
    world_size: int

    @property
    def step_batch_size(self) -> int:
        return self.batch_size * self.world_size * self.accumulation


def auto_limit(train_rows: int, world_size: int, accumulation: int) -> int:
    """The largest micro-batch `auto` considers: an epoch keeps MIN_STEPS_PER_EPOCH steps."""
    return max(1, train_rows // (MIN_STEPS_PER_EPOCH * world_size * accumulation))


def _round_down(n: int) -> int:
    return n - n % TENSOR_CORE_MULTIPLE if n >= TENSOR_CORE_MULTIPLE else n


def plan(batch_size: int | str, accumulation: int | None, effective: int | None, world_size: int,
         fits: int | None, train_rows: int) -> BatchPlan:
    """The plan for the configured settings; `fits` is the largest micro-batch that fits (auto only)."""
    if effective is not None:
        if effective % world_size:
            raise BatchPlanError(f"spec.training.effectiveBatchSize: {effective} is not a multiple of the "
                                 f"{world_size} processes")
        if batch_size != "auto":
            if effective % (batch_size * world_size):
                raise BatchPlanError(
                    f"spec.training.effectiveBatchSize: {effective} is not a multiple of spec.training.batchSize x "
                    f"processes ({batch_size} x {world_size})")
            return BatchPlan(batch_size, effective // (batch_size * world_size), world_size)
        per_process = effective // world_size
        # the fewest micro-steps whose equal share of the step fits
        steps = next(a for a in range(1, per_process + 1) if per_process % a == 0 and per_process // a <= fits)
        return BatchPlan(per_process // steps, steps, world_size)
    accumulation = accumulation or 1
    if batch_size != "auto":
        return BatchPlan(batch_size, accumulation, world_size)
    return BatchPlan(_round_down(min(fits, auto_limit(train_rows, world_size, accumulation))), accumulation,
                     world_size)


def evaluation_batch(configured: int | str, plan: BatchPlan, on_gpu: bool) -> int:
    if configured != "auto":
        return configured
    return EVALUATION_BATCH_FACTOR * plan.batch_size if on_gpu else CPU_EVALUATION_BATCH


def probe_fitting_batch(loss_module: torch.nn.Module, parameters: list[torch.Tensor], device: torch.device,
                        source_length: int, target_length: int, limit: int) -> int:
    """The largest power-of-two micro-batch up to `limit` (and `limit` itself) whose forward and backward at
    the longest lengths stay under PROBE_MEMORY_SHARE of the GPU, with AdamW's two moments allocated as they
    will be. The RNG state is restored, so the probe does not change the run's dropout masks.
    """
    total = torch.cuda.get_device_properties(device).total_memory
    rng = torch.cuda.get_rng_state(device)
    moments = [torch.empty_like(p) for p in parameters for _ in range(2)]
    candidates = sorted({min(1 << k, limit) for k in range(limit.bit_length() + 1)})
    fits = 1
    for batch in candidates:
        torch.cuda.reset_peak_memory_stats(device)
        try:
            source = torch.ones(batch, source_length, dtype=torch.long, device=device)
            target = torch.ones(batch, target_length, dtype=torch.long, device=device)
            loss_module(input_ids=source, attention_mask=torch.ones_like(source), decoder_input_ids=target,
                        labels=target).backward()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            for p in parameters:
                p.grad = None
        if peak > PROBE_MEMORY_SHARE * total:
            break
        fits = batch
    del moments
    torch.cuda.empty_cache()
    torch.cuda.set_rng_state(rng, device)
    return fits
