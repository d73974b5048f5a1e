"""The training run: data -> model -> seeded, resumable, optionally distributed step loop -> evaluation -> artifacts.

One code path for one process and for torchrun (DDP): gloo on CPU, NCCL on GPUs.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from floe_trainer import artifacts, checkpoint, data, evaluate, modeling
from floe_trainer.batching import (
    Tokenized,
    collate,
    count_target_tokens,
    epoch_step_batches,
    micro_batch,
    tokenize,
)
from floe_trainer.config import Precision, Toggle, TrainerConfig
from floe_trainer.progress import Reporter, StatusPatcher, emit

PREFIX = "summarize: "  # the seed's task framing


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
                 accumulation: int, max_grad_norm: float | None, pad_id: int, compile_model: bool | str,
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
        if compile_model == "blocks":
            # Regional compilation: each transformer block is compiled (and fused) on its own; encoder and
            # decoder blocks share code, so it compiles in a fraction of the whole model's time.
            # All blocks share one forward, specialised per block kind and mask/bias presence: more
            # variants than dynamo's default cache of 8, past which blocks silently fall back to eager.
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            torch._dynamo.config.accumulated_cache_size_limit = max(
                torch._dynamo.config.accumulated_cache_size_limit, 512)
            for block in (*model.encoder.block, *model.decoder.block):
                block.compile(dynamic=compile_dynamic)
        elif compile_model:
            # dynamic: one graph for every padded length instead of a recompile per shape
            self.module = torch.compile(module, dynamic=compile_dynamic)

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
        if self.max_grad_norm:
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


SNOWFLAKE_SECRET_DIR = Path("/var/run/floe/snowflake")


def open_snowflake_session():
    """From the mounted connection Secret; the local testing emulator when it configures no account."""
    from floe_trainer.snowflake_session import open_session, read_connection_dir

    return open_session(read_connection_dir(SNOWFLAKE_SECRET_DIR, None))


def train(cfg: TrainerConfig, session=None) -> dict:
    """Run the whole job; returns the final metrics (with modelDigest) on rank 0, {} on other ranks."""
    rt = setup_runtime()
    tc = cfg.training
    random.seed(tc.seed)
    torch.manual_seed(tc.seed)
    if rt.device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32
        torch.backends.cudnn.allow_tf32 = True

    if cfg.dataset.snowflake is not None and session is None:
        session = open_snowflake_session()
    prepared = data.load(cfg.dataset, session)
    ckpt_root = Path(cfg.checkpoint.dir)
    corpus = [PREFIX + d for d in prepared.train.documents] + prepared.train.summaries
    if rt.is_main:
        checkpoint.remove_partial(ckpt_root)
        model, tokenizer = modeling.load(cfg.model, corpus, ckpt_root / "tokenizer", tc.seed)
    rt.barrier()  # rank 0 trained the scratch tokenizer; the others load it
    if not rt.is_main:
        model, tokenizer = modeling.load(cfg.model, corpus, ckpt_root / "tokenizer", tc.seed)
    pad_id = tokenizer.pad_token_id
    train_tok = tokenize(prepared.train, tokenizer, PREFIX, tc.source_max_length, tc.target_max_length)
    val_tok = tokenize(prepared.validation, tokenizer, PREFIX, tc.source_max_length, tc.target_max_length)

    step_batch_size = tc.batch_size * rt.world_size * tc.gradient_accumulation_steps
    steps_per_epoch = len(train_tok) // step_batch_size
    if steps_per_epoch == 0:
        raise data.DataError(
            f"dataset: {len(train_tok)} training rows are fewer than one step batch of {step_batch_size} "
            f"(training.batchSize x processes x training.gradientAccumulationSteps)")
    total_steps = tc.epochs * steps_per_epoch
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)

    model.to(rt.device).train()
    dtype = autocast_dtype(tc.precision, rt.device)
    optimizer = make_optimizer(model, tc.learning_rate, rt.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(total_steps, tc.warmup_ratio))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=dtype == torch.float16)
    autocast = autocast_factory(rt.device, dtype)

    global_step, start_epoch, start_batch, history, initial_val_loss = 0, 0, 0, [], None
    resume_from = checkpoint.latest(ckpt_root)
    if resume_from is not None:
        model_state, state = checkpoint.load(resume_from)
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
        initial_val_loss = evaluate.validation_loss(model, val_tok, pad_id, tc.batch_size, rt.device, autocast)

    # Regional (per-block) compilation: measured 1.6x over eager for t5-base on an H100, compiled in about
    # two minutes; compiling the whole model had not finished after four (bench/results/trainer.md).
    compile_model = tc.compile == Toggle.on or (tc.compile == Toggle.auto and rt.device.type == "cuda")
    loop = StepLoop(model, optimizer, scheduler, scaler, rt, dtype, tc.batch_size, tc.gradient_accumulation_steps,
                    tc.max_grad_norm, pad_id, "blocks" if compile_model else False,
                    pad_multiple=16 if rt.device.type == "cuda" else 8)
    reporter = Reporter(total_steps, cfg.metrics_port, StatusPatcher.from_environment()) if rt.is_main else None
    if rt.is_main:
        emit("start", trainRows=len(train_tok), validationRows=len(val_tok), rowsRead=prepared.rows_read,
             rowsDropped=prepared.rows_dropped, processes=rt.world_size, device=str(rt.device),
             precision=str(dtype).removeprefix("torch.") if dtype else "fp32", compile=compile_model,
             stepBatchSize=step_batch_size, totalSteps=total_steps, initialValidationLoss=initial_val_loss)

    def save_checkpoint(epoch: int, batch_in_epoch: int) -> None:
        rngs = _gather(rt, rng_state())
        if rt.is_main:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "rng": rngs, "step": global_step, "epoch": epoch,
                     "batchInEpoch": batch_in_epoch, "history": history, "initialValidationLoss": initial_val_loss}
            path = checkpoint.save(ckpt_root, global_step, model.state_dict(), state, cfg.checkpoint.keep)
            emit("checkpoint", step=global_step, path=str(path))
        rt.barrier()

    def run_evaluation(epoch: int) -> dict:
        metrics = {}
        if rt.is_main:
            metrics = _evaluate(epoch)
            reporter.evaluation(metrics)
        rt.barrier()
        return metrics

    @torch.compiler.set_stance("force_eager")  # generation's cache objects would only recompile the blocks
    def _evaluate(epoch: int) -> dict:
        metrics = {"epoch": epoch + 1, "step": global_step,
                   "validationLoss": round(evaluate.validation_loss(model, val_tok, pad_id, tc.batch_size,
                                                                    rt.device, autocast), 5)}
        if cfg.evaluation.rouge:
            metrics.update(evaluate.rouge(model, tokenizer, val_tok, prepared.validation.summaries,
                                          cfg.evaluation.max_samples, cfg.evaluation.num_beams,
                                          cfg.evaluation.max_new_tokens, tc.batch_size, rt.device, autocast))
        return metrics

    log_every = max(1, min(50, total_steps // 100))
    lengths = train_tok.source_lengths()
    started, steps_at_start = time.perf_counter(), global_step
    window_start, window_steps = started, 0
    for epoch in range(start_epoch, tc.epochs):
        if global_step >= total_steps:
            break
        batches = epoch_step_batches(lengths, step_batch_size, tc.seed, epoch)
        first = start_batch if epoch == start_epoch else 0
        for k in range(first, steps_per_epoch):
            loss_share = loop.step(train_tok, batches[k])
            global_step += 1
            window_steps += 1
            epoch_done = k == steps_per_epoch - 1 or global_step >= total_steps
            if global_step % log_every == 0 or epoch_done:
                if rt.distributed:
                    dist.all_reduce(loss_share)
                loss = loss_share.item()
                now = time.perf_counter()
                rate = window_steps * step_batch_size / (now - window_start)
                per_step = (now - started) / (global_step - steps_at_start)
                if rt.is_main:
                    reporter.step(global_step, epoch + 1, loss, rate, per_step * (total_steps - global_step))
                window_start, window_steps = now, 0
            if global_step % cfg.checkpoint.every_steps == 0 and not epoch_done:
                save_checkpoint(epoch, k + 1)
            if global_step >= total_steps:
                break
        history.append(run_evaluation(epoch))
        save_checkpoint(epoch + 1, 0)

    result = {}
    if rt.is_main:
        final = history[-1] if history else {}
        result = {**{k: v for k, v in final.items() if k not in ("epoch", "step")},
                  "initialValidationLoss": None if initial_val_loss is None else round(initial_val_loss, 5),
                  "steps": global_step, "epochs": len(history), "trainRows": len(train_tok),
                  "validationRows": len(val_tok), "rowsDropped": prepared.rows_dropped, "history": history}
        base = _describe_source(cfg)
        name = cfg.job.name if cfg.job else "floe-t5"
        result["modelDigest"] = artifacts.save(Path(cfg.output.dir), model, tokenizer, result, name, base, PREFIX)
        emit("done", **{k: v for k, v in result.items() if k != "history"})
    rt.barrier()
    return result


def _describe_source(cfg: TrainerConfig) -> str:
    m = cfg.model
    if m.hub is not None:
        return m.hub.id + (f"@{m.hub.revision}" if m.hub.revision else "")
    if m.path is not None:
        return m.path
    return f"scratch:{m.scratch.shape.value}"
