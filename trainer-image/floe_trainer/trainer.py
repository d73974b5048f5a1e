"""The training run: data -> model -> seeded, resumable, optionally distributed step loop -> evaluation -> artifacts.

One code path for one process and for torchrun (DDP): gloo on CPU, NCCL on GPUs.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from floe_contract.paths import SNOWFLAKE_DIR
from floe_contract.training import EvaluationEvery, Precision, Toggle, Training
from torch import nn

from floe_trainer import artifacts, batch_plan, checkpoint, data, evaluate, modeling, prefetch, rouge
from floe_trainer.batching import (
    PREFIX,
    Tokenized,
    collate,
    count_target_tokens,
    epoch_step_batches,
    micro_batch,
)
from floe_trainer.config import ConfigError, TrainerConfig
from floe_trainer.progress import STATUS_PHASE, PhaseClock, Reporter, StatusPatcher, emit
from floe_trainer.text_encoder import TextEncoder


@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup_runtime() -> Runtime:
    """From torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*) or a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return Runtime(rank, world_size, local_rank, device)


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it under `auto`; fp32 (no autocast) on CPU so CPU runs are exact."""
    if precision == Precision.auto:
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if precision == Precision.fp16 and device.type != "cuda":
        raise ValueError("training.precision: fp16 needs a GPU")
    return {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16, Precision.fp32: None}[precision]


def autocast_factory(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


class TokenCrossEntropy(nn.Module):
    """Model + summed token cross-entropy, so torch.compile and DDP see one module."""

    def __init__(self, model: nn.Module, dtype: torch.dtype | None):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, input_ids, attention_mask, decoder_input_ids, labels):
        with torch.autocast(input_ids.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                decoder_input_ids=decoder_input_ids, use_cache=False).logits
        return nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                                           reduction="sum")


class StepLoop:
    """One optimizer step over a step batch, split across processes and accumulation micro-steps.

    Each process's loss is scaled by world_size / (target tokens of the whole step batch), so DDP's
    gradient average equals the mean token loss of the step batch however it is split.
    """

    def __init__(self, model: nn.Module, optimizer, scheduler, scaler, runtime: Runtime, dtype, batch_size: int,
                 accumulation: int, max_grad_norm: float, pad_id: int, compile_model: bool | str,
                 pad_multiple: int = 8, compile_dynamic: bool | None = True):
        self.raw_model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.runtime, self.batch_size, self.accumulation = runtime, batch_size, accumulation
        self.max_grad_norm, self.pad_id, self.pad_multiple = max_grad_norm, pad_id, pad_multiple
        module: nn.Module = TokenCrossEntropy(model, dtype)
        if runtime.distributed:
            ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            module = nn.parallel.DistributedDataParallel(module, device_ids=ids)
        self.ddp = module if runtime.distributed else None
        self.module = module
        self.compiled = False
        if compile_model == "blocks":
            self.compile_blocks(compile_dynamic)
        elif compile_model:
            # dynamic: one graph for every padded length instead of a recompile per shape
            self.module = torch.compile(module, dynamic=compile_dynamic)
            self.compiled = True

    def compile_blocks(self, dynamic: bool | None = True) -> None:
        """Regional compilation: each transformer block is compiled (and fused) on its own; encoder and decoder
        blocks share code, so it compiles in a fraction of the whole model's time. Takes effect at the next step.
        """
        # All blocks share one forward, specialised per block kind and mask/bias presence: more
        # variants than dynamo's default cache of 8, past which blocks silently fall back to eager.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        torch._dynamo.config.accumulated_cache_size_limit = max(
            torch._dynamo.config.accumulated_cache_size_limit, 512)
        for block in (*self.raw_model.encoder.block, *self.raw_model.decoder.block):
            block.compile(dynamic=dynamic)
        self.compiled = True

    def step(self, data: Tokenized, step_batch: list[int]) -> torch.Tensor:
        """Run one optimizer step; returns this process's share of the step's mean token loss (no sync)."""
        rt, device = self.runtime, self.runtime.device
        scale = rt.world_size / count_target_tokens(data, step_batch)
        loss_share = torch.zeros((), device=device)
        for m in range(self.accumulation):
            batch = collate(data, micro_batch(step_batch, m, rt.rank, rt.world_size, self.batch_size), self.pad_id,
                            self.pad_multiple)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            last = m == self.accumulation - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
                token_loss_sum = self.module(**batch)
                self.scaler.scale(token_loss_sum * scale).backward()
            loss_share += token_loss_sum.detach() * (scale / rt.world_size)
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_share


def warmup_linear(total_steps: int, warmup_ratio: float):
    """LR multiplier: linear warm-up over warmup_ratio of the steps, then linear decay to zero."""
    warmup = math.ceil(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def make_optimizer(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, fused=device.type == "cuda")


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _gather(runtime: Runtime, obj):
    if not runtime.distributed:
        return [obj]
    out = [None] * runtime.world_size
    dist.all_gather_object(out, obj)
    return out


SNOWFLAKE_SECRET_DIR = Path(SNOWFLAKE_DIR)


def open_snowflake_session():
    """From the mounted connection Secret; the local testing emulator when it configures no account."""
    from floe_trainer.snowflake_session import open_session, read_connection_dir

    return open_session(read_connection_dir(SNOWFLAKE_SECRET_DIR, None))


class Preempted(Exception):  # noqa: N818 - what happened, not a programming error
    """SIGTERM (Kubernetes or Kueue preempting the pod): a checkpoint of `step` is in place, the run stopped."""

    def __init__(self, step: int):
        super().__init__(f"stopped on SIGTERM after checkpointing step {step}; a restarted pod resumes there")
        self.step = step


class SigtermFlag:
    """Turns SIGTERM into a flag the step loop reads at its next sync point (the main thread only)."""

    def __init__(self):
        self.received = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


# Automatic evaluation cadence: at most every AUTO_EVALUATION_MIN_S of training, and not before nine
# times the last evaluation's duration has passed, so evaluations take at most about 10% of the wall time.
AUTO_EVALUATION_MIN_S = 600.0
AUTO_EVALUATION_SHARE = 0.1


class EvaluationCadence:
    """When to evaluate during training (config `evaluation.every`); the final evaluation is not its business."""

    def __init__(self, every: EvaluationEvery, started: float):
        self.every, self.last_end, self.last_seconds = every, started, 0.0

    def due_by_count(self, step: int, epoch: int, epoch_done: bool) -> bool:
        """Due at this step by a step or epoch count (the same answer on every process)."""
        if self.every.steps is not None:
            return step % self.every.steps == 0
        return self.every.epochs is not None and epoch_done and (epoch + 1) % self.every.epochs == 0

    def due_by_time(self, now: float) -> bool:
        if self.every.minutes is not None:
            return now - self.last_end >= self.every.minutes * 60
        if self.every.steps is None and self.every.epochs is None:
            wait = max(AUTO_EVALUATION_MIN_S, self.last_seconds * (1 / AUTO_EVALUATION_SHARE - 1))
            return now - self.last_end >= wait
        return False

    def evaluated(self, started: float, ended: float) -> None:
        self.last_end, self.last_seconds = ended, ended - started


# compile: auto on one GPU: eager steps timed before deciding; the speed-up and the cost of compiling the blocks
# (bench/results/trainer.md: 1.6x for t5-base; bench/results/job.md: 100-150 s for t5-small, cold cache).
COMPILE_PROBE_SKIP, COMPILE_PROBE_STEPS = 5, 20
COMPILE_SPEEDUP = 1.6
COMPILE_SECONDS = 150.0


def compiling_pays(eager_seconds_left: float) -> bool:
    """Whether compiling now would finish the remaining steps sooner than running them eagerly."""
    return eager_seconds_left * (1 - 1 / COMPILE_SPEEDUP) > COMPILE_SECONDS


def _compilations() -> int:
    """Graphs torch.compile has produced so far in this process: a step that raises it was compiling."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def plan_batches(tc: Training, rt: Runtime, model: nn.Module, dtype, train_tok: Tokenized,
                 pad_multiple: int) -> batch_plan.BatchPlan:
    """The micro-batch and accumulation for `training`; `auto` on a GPU probes it at the longest lengths of
    the training data (every process takes the smallest answer), on CPU it is CPU_BATCH."""
    fits = None
    if tc.batch_size == "auto":
        accumulation = tc.gradient_accumulation_steps or 1
        limit = (tc.effective_batch_size // rt.world_size if tc.effective_batch_size is not None
                 else batch_plan.auto_limit(len(train_tok), rt.world_size, accumulation))
        if rt.device.type != "cuda":
            fits = min(limit, batch_plan.CPU_BATCH)
        else:
            longest = [-(-int(lengths.max()) // pad_multiple) * pad_multiple
                       for lengths in (train_tok.source_lengths(), train_tok.target_lengths())]
            with modeling.without_cudnn_attention():  # cuDNN's plans for the probe's shapes: 3.6 s of 4.8 on an H200
                fits = batch_plan.probe_fitting_batch(TokenCrossEntropy(model, dtype), list(model.parameters()),
                                                      rt.device, *longest, max(1, limit))
            if rt.distributed:
                agreed = torch.tensor(fits, device=rt.device)
                dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
                fits = int(agreed.item())
    try:
        return batch_plan.plan(tc.batch_size, tc.gradient_accumulation_steps, tc.effective_batch_size,
                               rt.world_size, fits, len(train_tok))
    except batch_plan.BatchPlanError as err:
        raise ConfigError(str(err)) from None


def train(cfg: TrainerConfig, session=None, prefetched: prefetch.Prefetch | None = None) -> dict:
    """Run the whole job; returns the final metrics (with modelDigest) on rank 0, {} on other ranks.

    `prefetched`: the data, being read and tokenized since before the imports (`prefetch.start`).
    Raises Preempted after checkpointing when SIGTERM arrives during training.
    """
    sigterm = SigtermFlag()
    try:
        return _train(cfg, session, sigterm, prefetched)
    finally:
        sigterm.restore()


def _train(cfg: TrainerConfig, session, sigterm: SigtermFlag, prefetched: prefetch.Prefetch | None) -> dict:
    rt = setup_runtime()
    tc, ec = cfg.training, cfg.evaluation
    cuda = rt.device.type == "cuda"
    clock = PhaseClock(torch.cuda.synchronize if cuda else lambda: None)
    reporter: Reporter | None = None
    warming_up = False  # compiling: the status says so until the first step that compiles nothing

    def enter(phase: str) -> None:
        clock.switch(phase)
        if reporter is not None:
            reporter.phase("compiling" if phase == "train" and warming_up else STATUS_PHASE[phase])

    random.seed(tc.seed)
    torch.manual_seed(tc.seed)
    if cuda:
        torch.set_float32_matmul_precision("high")  # TF32
        torch.backends.cudnn.allow_tf32 = True

    ckpt_root = Path(cfg.checkpoint.dir)
    if rt.is_main:
        checkpoint.remove_partial(ckpt_root)
    if prefetched is not None:
        model, tokenizer = modeling.load(cfg.model, [], ckpt_root / "tokenizer", tc.seed)
        rt.barrier()  # rank 0 removed partial checkpoints
        enter("tokenize")  # what is left of the prefetch
        ready = prefetched.result()
        if rt.is_main:
            emit("prefetched", seconds=ready.seconds)
    else:
        if cfg.dataset.snowflake is not None and session is None:
            session = open_snowflake_session()
        prepared = data.load(cfg.dataset, session)
        corpus = [PREFIX + d for d in prepared.train.documents] + prepared.train.summaries
        if rt.is_main:
            model, tokenizer = modeling.load(cfg.model, corpus, ckpt_root / "tokenizer", tc.seed)
        rt.barrier()  # rank 0 trained the scratch tokenizer; the others load it
        if not rt.is_main:
            model, tokenizer = modeling.load(cfg.model, corpus, ckpt_root / "tokenizer", tc.seed)
        enter("tokenize")
        ready = prefetch.tokenize_splits(prepared, TextEncoder.of(tokenizer), cfg)
    train_tok, val_tok = ready.train, ready.validation
    pad_id = tokenizer.pad_token_id
    enter("startup")

    model.to(rt.device).train()
    dtype = autocast_dtype(tc.precision, rt.device)
    pad_multiple = 16 if cuda else 8
    resume_from = checkpoint.latest(ckpt_root)
    resumed = checkpoint.load(resume_from) if resume_from is not None else None
    if resumed is not None:  # the interrupted run's batches, whatever this machine would choose
        saved = resumed[1]["batchPlan"]
        plan = batch_plan.BatchPlan(saved["batchSize"], saved["accumulation"], rt.world_size)
    else:
        plan = plan_batches(tc, rt, model, dtype, train_tok, pad_multiple)
    step_batch_size = plan.step_batch_size
    eval_batch = batch_plan.evaluation_batch(ec.batch_size, plan, cuda)
    steps_per_epoch = len(train_tok) // step_batch_size
    if steps_per_epoch == 0:
        raise data.DataError(
            f"dataset: {len(train_tok)} training rows are fewer than one step batch of {step_batch_size} "
            f"(training.batchSize x processes x training.gradientAccumulationSteps)")
    total_steps = tc.epochs * steps_per_epoch
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)

    optimizer = make_optimizer(model, tc.learning_rate, rt.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(total_steps, tc.warmup_ratio))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=dtype == torch.float16)
    autocast = autocast_factory(rt.device, dtype)

    if rt.is_main:
        reporter = Reporter(total_steps, cfg.metrics_port, StatusPatcher.from_environment(), plan.batch_size,
                            plan.accumulation)
        reporter.phase(STATUS_PHASE["startup"])
    global_step, start_epoch, start_batch, history, initial_val_loss = 0, 0, 0, [], None
    if resumed is not None:
        model_state, state = resumed
        model.load_state_dict(model_state)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        set_rng_state(rngs[rt.rank] if rt.rank < len(rngs) else rngs[0])
        global_step, start_epoch, start_batch = state["step"], state["epoch"], state["batchInEpoch"]
        history, initial_val_loss = state["history"], state["initialValidationLoss"]
        if rt.is_main:
            emit("resumed", checkpoint=resume_from.name, step=global_step, epoch=start_epoch + 1)
    elif rt.is_main:
        enter("evaluate")
        initial_val_loss = evaluate.validation_loss(model, val_tok, pad_id, eval_batch, rt.device, autocast,
                                                    pad_multiple)

    # Regional (per-block) compilation: measured 1.6x over eager for t5-base on an H100, compiled in about
    # two minutes; compiling the whole model had not finished after four (bench/results/trainer.md).
    # `auto` on one GPU first times a few eager steps and compiles only when the steps left would take long
    # enough for the speed-up to repay the compilation (processes of a DDP job would have to agree: they compile).
    compile_model = tc.compile == Toggle.on or (tc.compile == Toggle.auto and cuda and rt.distributed)
    decide_compile = tc.compile == Toggle.auto and cuda and not rt.distributed
    loop = StepLoop(model, optimizer, scheduler, scaler, rt, dtype, plan.batch_size, plan.accumulation,
                    tc.max_grad_norm, pad_id, "blocks" if compile_model else False, pad_multiple=pad_multiple)
    writer = checkpoint.BackgroundWriter(ckpt_root, cfg.checkpoint.keep, reporter.checkpoint_saved) \
        if rt.is_main else None
    if rt.is_main:
        emit("start", trainRows=len(train_tok), validationRows=len(val_tok), rowsRead=ready.rows_read,
             rowsDropped=ready.rows_dropped, processes=rt.world_size, device=str(rt.device),
             precision=str(dtype).removeprefix("torch.") if dtype else "fp32",
             compile="auto" if decide_compile else compile_model,
             batchSize=plan.batch_size, gradientAccumulationSteps=plan.accumulation,
             stepBatchSize=step_batch_size, totalSteps=total_steps, initialValidationLoss=initial_val_loss)

    def save_checkpoint(epoch: int, k: int, wait: bool) -> None:
        """Snapshot the state after batch k of `epoch` to host memory; write it in the background."""
        enter("checkpoint")
        position = (epoch, k + 1) if k + 1 < steps_per_epoch else (epoch + 1, 0)
        rngs = _gather(rt, rng_state())
        if rt.is_main:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "rng": rngs, "step": global_step, "epoch": position[0],
                     "batchInEpoch": position[1], "history": history, "initialValidationLoss": initial_val_loss,
                     "batchPlan": {"batchSize": plan.batch_size, "accumulation": plan.accumulation}}
            model_state, state = checkpoint.snapshot((model.state_dict(), state))
            writer.submit(global_step, model_state, state)
            if wait:
                writer.wait()
        rt.barrier()

    @torch.compiler.set_stance("force_eager")  # generation's cache objects would only recompile the blocks
    def run_evaluation(epoch: int, final: bool) -> dict:
        enter("evaluate")
        metrics = {}
        if rt.is_main:
            metrics = {"epoch": epoch + 1, "step": global_step,
                       "validationLoss": round(evaluate.validation_loss(model, val_tok, pad_id, eval_batch,
                                                                        rt.device, autocast, pad_multiple), 5)}
            if ec.rouge:
                metrics.update(evaluate.rouge(model, tokenizer, val_tok, ready.references,
                                              ec.final_max_samples if final else ec.max_samples, ec.num_beams,
                                              ec.max_new_tokens, eval_batch, rt.device, autocast))
            reporter.evaluation(metrics)
        rt.barrier()
        return metrics

    # Sync points (loss logged, SIGTERM and time-based decisions agreed across processes) at most 10 steps apart.
    log_every = max(1, min(10, total_steps // 100))
    cadence = EvaluationCadence(ec.every, time.perf_counter())
    last_checkpoint = time.perf_counter()
    every_ckpt_s = None if cfg.checkpoint.every_minutes is None else cfg.checkpoint.every_minutes * 60
    train_steps = train_samples = compile_samples = 0
    logged_train_s, logged_train_samples = 0.0, 0
    warming_up = loop.compiled
    probe_started = 0.0
    if rt.is_main and ec.rouge:
        rouge.import_scorer_in_background()
    epoch = start_epoch
    for epoch in range(start_epoch, tc.epochs):
        if global_step >= total_steps:
            break
        batches = epoch_step_batches(train_tok.source_lengths(), step_batch_size, tc.seed, epoch)
        first = start_batch if epoch == start_epoch else 0
        for k in range(first, steps_per_epoch):
            enter("train")
            compiled_before, step_started = _compilations() if loop.compiled else 0, time.perf_counter()
            loss_share = loop.step(train_tok, batches[k])
            global_step += 1
            if loop.compiled and _compilations() != compiled_before:
                clock.charge("compile", step_started)
                compile_samples += step_batch_size
            else:
                train_steps += 1
                train_samples += step_batch_size
                if warming_up:
                    warming_up = False
                    enter("train")
            if decide_compile and train_steps == COMPILE_PROBE_SKIP:  # past the first steps' one-off set-up
                torch.cuda.synchronize()
                probe_started = clock.totals()["train"]
            if decide_compile and train_steps == COMPILE_PROBE_SKIP + COMPILE_PROBE_STEPS:
                decide_compile = False
                clock.switch("compile")  # waits for the probe's kernels: its rate is the GPU's
                per_step = (clock.totals()["train"] - probe_started) / COMPILE_PROBE_STEPS
                eager_left = per_step * (total_steps - global_step)
                if compiling_pays(eager_left):
                    loop.compile_blocks()
                    warming_up = True
                if rt.is_main:
                    emit("compile", compile=loop.compiled, eagerSecondsLeft=round(eager_left, 1))
            epoch_done = k == steps_per_epoch - 1 or global_step >= total_steps
            last = global_step >= total_steps
            ckpt_by_count = cfg.checkpoint.every_steps is not None and global_step % cfg.checkpoint.every_steps == 0
            eval_by_count = cadence.due_by_count(global_step, epoch, epoch_done)
            if not (global_step % log_every == 0 or epoch_done or ckpt_by_count or eval_by_count):
                continue
            now = time.perf_counter()
            # Time-based decisions are rank 0's; the all-reduce tells the others (one collective per sync point).
            flags = [float(sigterm.received),
                     float(rt.is_main and cadence.due_by_time(now)),
                     float(rt.is_main and every_ckpt_s is not None and now - last_checkpoint >= every_ckpt_s)]
            if rt.distributed:
                agreed = torch.cat([loss_share.reshape(1), torch.tensor(flags, device=rt.device)])
                dist.all_reduce(agreed)
                loss, flags = agreed[0].item(), agreed[1:].tolist()
            else:
                loss = loss_share.item()
            preempt, eval_by_time, ckpt_by_time = (f > 0 for f in flags)
            if rt.is_main:
                totals = clock.totals()
                window_s = totals["train"] - logged_train_s
                rate = (train_samples - logged_train_samples) / window_s if window_s > 0 else 0.0
                eta = totals["train"] / train_steps * (total_steps - global_step) if train_steps else None
                reporter.step(global_step, epoch + 1, loss, rate, eta)
                logged_train_s, logged_train_samples = totals["train"], train_samples
            if preempt:
                save_checkpoint(epoch, k, wait=True)
                if rt.is_main:
                    emit("preempted", step=global_step, phases=clock.totals())
                raise Preempted(global_step)
            if (eval_by_count or eval_by_time) and not last:
                evaluation_started = time.perf_counter()
                history.append(run_evaluation(epoch, final=False))
                cadence.evaluated(evaluation_started, time.perf_counter())
            if (ckpt_by_count or ckpt_by_time) and not last:
                save_checkpoint(epoch, k, wait=False)
                last_checkpoint = time.perf_counter()
            if last:
                break

    result = {}
    enter("checkpoint")
    if writer is not None:
        writer.wait()  # the last background write must be in place before the job reports success
    history.append(run_evaluation(epoch, final=True))
    enter("export")
    if rt.is_main:
        final = history[-1]
        result = {**{k: v for k, v in final.items() if k not in ("epoch", "step")},
                  "initialValidationLoss": None if initial_val_loss is None else round(initial_val_loss, 5),
                  "steps": global_step, "epochs": math.ceil(global_step / steps_per_epoch),
                  "trainRows": len(train_tok), "validationRows": len(val_tok), "rowsDropped": ready.rows_dropped,
                  "history": history}
        base = _describe_source(cfg)
        name = cfg.job.name if cfg.job else "floe-t5"
        result["modelDigest"] = artifacts.save(Path(cfg.output.dir), model, tokenizer, result, name, base, PREFIX)
    rt.barrier()
    if rt.is_main:
        seconds = clock.totals()
        emit("phases", seconds=seconds, trainSteps=train_steps, trainSamples=train_samples,
             compileSamples=compile_samples,
             loopSamplesPerSecond=round(train_samples / seconds["train"], 2) if seconds["train"] else None)
        emit("done", **{k: v for k, v in result.items() if k != "history"})
    return result


def _describe_source(cfg: TrainerConfig) -> str:
    m = cfg.model
    if m.hub is not None:
        return m.hub.id + (f"@{m.hub.revision}" if m.hub.revision else "")
    if m.path is not None:
        return m.path
    return f"scratch:{m.scratch.shape.value}"
