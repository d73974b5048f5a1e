#!/usr/bin/env python3
"""Throughput of floe's training step loop against the seed's loop, same data, tokenizer and T5 shape.

One process (or torchrun, for DDP scaling):
  trainer_bench.py --data news_summary.csv --baseline seed_baseline.py --shape t5-base \
      --variants eager:32,blocks:64,compile:64 --seconds 20 --out results.jsonl [--profile]
  torchrun --nproc-per-node 2 trainer_bench.py ... --no-baseline

For each variant ("eager", "blocks" (each T5 block compiled) or "compile" (the whole loss module), then
the per-GPU batch size) it builds a fresh model, runs the
trainer's StepLoop (bf16 autocast, TF32, fused AdamW, warm-up LR schedule, clipping, length-grouped
dynamic padding) and reports samples/s, tokens/s (non-pad source + target tokens, as the seed counts
them) and model FLOPs utilization: useful training FLOPs (3x the forward pass, counted per sample at
its own unpadded lengths) per second over the GPU's dense bf16 peak. The seed baseline runs in the same
process tree before the variants and gets the same FLOP count per sample.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer-image"))

from floe_trainer import data as floe_data  # noqa: E402
from floe_trainer.batching import epoch_step_batches, tokenize  # noqa: E402
from floe_trainer.config import ScratchShape, parse_config  # noqa: E402
from floe_trainer.modeling import scratch_model, train_tokenizer, use_flex_attention  # noqa: E402
from floe_trainer.text_encoder import TextEncoder  # noqa: E402
from floe_trainer.trainer import PREFIX, StepLoop, make_optimizer, setup_runtime, warmup_linear  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense tensor-core FLOP/s (SXM datasheets)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_flops() -> float:
    if not torch.cuda.is_available():
        return float("nan")
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), float("nan"))


def train_flops(cfg, src: int, tgt: int) -> float:
    """Training FLOPs (forward x3) of one T5 sample with `src` source and `tgt` target tokens."""
    d, inner, ff, v = cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff, cfg.vocab_size
    enc = cfg.num_layers * src * (8 * d * inner + 4 * d * ff + 4 * src * inner)
    dec = cfg.num_decoder_layers * (
        tgt * (8 * d * inner + 4 * tgt * inner)           # self-attention: projections + scores/values
        + tgt * 4 * d * inner + src * 4 * d * inner        # cross-attention: q,o on target, k,v on source
        + tgt * 4 * src * inner                            # cross-attention scores/values
        + tgt * 4 * d * ff)                                # feed-forward
    head = 2 * tgt * d * v
    return 3.0 * (enc + dec + head)


def run_baseline(args, tokenizer_dir: Path, batch: int, precision: str) -> dict:
    cmd = [sys.executable, args.baseline, "--data", args.data, "--tokenizer", str(tokenizer_dir), "--shape",
           args.shape, "--batch", str(batch), "--precision", precision, "--seconds", str(args.seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_peer(args, tokenizer_dir: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).with_name("hf_peer.py")), "--data", args.data, "--tokenizer",
           str(tokenizer_dir), "--shape", args.shape, "--batch", str(args.peer_batch), "--seconds", str(args.seconds),
           "--workdir", str(Path(args.workdir) / "hf-peer")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_variant(args, rt, tokenizer, train_tok, mode: str, batch: int) -> dict:
    mode, _, attention = mode.partition("+")  # e.g. blocks+flex: the trainer's training.attention: flex
    torch.manual_seed(0)
    model = scratch_model(ScratchShape(args.shape), tokenizer, seed=0).to(rt.device).train()
    if attention == "flex":
        use_flex_attention(model)
    elif attention:
        raise ValueError(f"unknown attention {attention!r}")
    optimizer = make_optimizer(model, 1e-4, rt.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(10_000, 0.06))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=False)
    loop = StepLoop(model, optimizer, scheduler, scaler, rt, torch.bfloat16, batch, 1, 1.0, tokenizer.pad_token_id,
                    compile_model={"eager": False, "blocks": "blocks"}.get(mode, True), pad_multiple=args.pad_multiple,
                    compile_dynamic=None if mode == "compile-static" else True)
    step_batch = batch * rt.world_size
    lengths = train_tok.source_lengths()
    src_lens, tgt_lens = lengths, train_tok.target_lengths().tolist()
    cfg = model.config

    def batches():
        epoch = 0
        while True:
            yield from epoch_step_batches(lengths, step_batch, seed=0, epoch=epoch)
            epoch += 1

    stream = batches()
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        loop.step(train_tok, next(stream))
    sync()
    warmup_s = time.perf_counter() - t0
    if rt.distributed:
        dist.barrier()
    steps = samples = tokens = 0
    flops = 0.0
    losses = []
    start = time.perf_counter()
    # A fixed step count under DDP: every rank must run the same number of steps.
    while (steps < args.steps) if args.steps else (time.perf_counter() - start < args.seconds):
        sb = next(stream)
        last = loop.step(train_tok, sb)
        if args.loss_curve:  # a sync per step: for the numerical check, not for the timing
            losses.append(round(float(last.item()), 4))
        steps += 1
        samples += len(sb)
        tokens += sum(int(src_lens[i]) + tgt_lens[i] for i in sb)
        flops += sum(train_flops(cfg, int(src_lens[i]), tgt_lens[i]) for i in sb)
    sync()
    dt = time.perf_counter() - start
    result = {"mode": mode + (f"+{attention}" if attention else ""), "batch_per_gpu": batch, "gpus": rt.world_size,
              "steps": steps,
              "samples_per_s": round(samples / dt, 2), "tokens_per_s": round(tokens / dt, 1),
              "tflops_per_s": round(flops / dt / 1e12, 1),
              "mfu": round(flops / dt / (peak_flops() * rt.world_size), 4),
              "warmup_s": round(warmup_s, 1), "loss_share": round(float(last.item()), 3),
              "max_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else None}
    if args.loss_curve:
        result["losses"] = losses
    if args.profile and not rt.distributed:
        result["profile"] = profile(loop, train_tok, stream, f"{Path(args.out).with_suffix('')}-{mode}-{batch}")
    del loop, model, optimizer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return result


def profile(loop, train_tok, stream, out: str) -> list:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    sync()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        wall = time.perf_counter()
        for _ in range(3):
            loop.step(train_tok, next(stream))
        sync()
        wall = time.perf_counter() - wall
    events = prof.key_averages()
    total = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA") or 1.0
    rows = sorted((e for e in events if e.device_type.name == "CUDA"), key=lambda e: -e.self_device_time_total)[:25]
    table = [{"kernel": e.key[:120], "share": round(e.self_device_time_total / total, 4), "calls": e.count}
             for e in rows]
    text = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=40)
    # Kernel time over wall time (under the profiler): well below 1 means the GPU waits on the host.
    busy = f"GPU kernel time {total / 1e3:.1f} ms over {wall * 1e3:.1f} ms wall for 3 steps\n"
    Path(out + ".profile.txt").write_text(busy + text)
    return [{"gpu_kernel_ms": round(total / 1e3, 1), "wall_ms": round(wall * 1e3, 1)}, *table]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--baseline", help="path of the seed's training loop (seed_baseline.py)")
    ap.add_argument("--baseline-batch", type=int, default=2)
    ap.add_argument("--control-batch", type=int, help="also run the seed's loop at this batch in bf16 (a control)")
    ap.add_argument("--peer-batch", type=int,
                    help="also run Hugging Face's Seq2SeqTrainer (bench/hf_peer.py) at this batch")
    ap.add_argument("--loss-curve", action="store_true",
                    help="record every timed step's loss (with --steps): the numerical check between variants")
    ap.add_argument("--shape", default="t5-base", choices=[s.value for s in ScratchShape])
    ap.add_argument("--variants", default="eager:32,compile:64")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--steps", type=int, help="time this many steps instead of --seconds (needed for DDP)")
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--pad-multiple", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=32128)
    ap.add_argument("--repeat", type=int, default=1,
                    help="train on the rows this many times over: more step batches per epoch to group by length")
    ap.add_argument("--tokenizer", help="a saved tokenizer dir to use instead of training one")
    ap.add_argument("--workdir", default="bench-work")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", default="trainer_bench.jsonl", help="JSON lines: the baseline, then one per variant")
    args = ap.parse_args()

    rt = setup_runtime()
    torch.set_float32_matmul_precision("high")
    spec = parse_config({"version": "v1", "model": {"scratch": {"shape": "tiny"}},
                         "dataset": {"file": {"path": args.data}}})
    prepared = floe_data.load(spec.dataset)
    # The same rows as the seed loop trains on (it drops only missing values): train + validation.
    pairs = floe_data.Pairs(prepared.train.documents + prepared.validation.documents,
                            prepared.train.summaries + prepared.validation.summaries)
    tokenizer_dir = Path(args.tokenizer or Path(args.workdir) / "tokenizer")
    if rt.is_main and not args.tokenizer:
        tokenizer = train_tokenizer([PREFIX + d for d in pairs.documents] + pairs.summaries, args.vocab,
                                    tokenizer_dir)
    rt.barrier()
    if not rt.is_main or args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    pairs = floe_data.Pairs(pairs.documents * args.repeat, pairs.summaries * args.repeat)
    train_tok = tokenize(pairs, TextEncoder.of(tokenizer), PREFIX, 512, 150)

    device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    report = {"device": device_name, "gpus": rt.world_size, "shape": args.shape,
              "vocab": len(tokenizer), "rows": len(pairs), "repeat": args.repeat, "torch": torch.__version__,
              "peak_bf16_flops": peak_flops(), "variants": []}
    import transformers

    report["transformers"] = transformers.__version__
    mean_flops = sum(train_flops(scratch_cfg(args, tokenizer), s, t) for s, t in zip(
        train_tok.source_lengths().tolist(), train_tok.target_lengths().tolist(), strict=True)) / len(train_tok)

    def same_data_row(kind: str, result: dict) -> None:
        """A row from another program on the same rows, tokenizer and shape: FLOPs counted as for floe's rows."""
        if "samples_per_s" in result:
            result["tflops_per_s"] = round(result["samples_per_s"] * mean_flops / 1e12, 2)
            result["mfu"] = round(result["samples_per_s"] * mean_flops / peak_flops(), 4)
        print(json.dumps({kind: result}), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps({"kind": kind, **{k: v for k, v in report.items() if k not in ("variants", "baseline")},
                                kind: result}) + "\n")

    if args.baseline and rt.is_main and not rt.distributed:
        report["baseline"] = run_baseline(args, tokenizer_dir, args.baseline_batch, "fp32")
        same_data_row("baseline", report["baseline"])
        # the control: the seed's loop at floe's batch and precision, so the table shows what the rest adds
        if args.control_batch:
            same_data_row("control", run_baseline(args, tokenizer_dir, args.control_batch, "bf16"))
    if args.peer_batch and rt.is_main and not rt.distributed:
        same_data_row("peer", run_peer(args, tokenizer_dir))
    for variant in args.variants.split(","):
        mode, batch = variant.split(":")
        try:
            result = bench_variant(args, rt, tokenizer, train_tok, mode, int(batch))
        except Exception as err:  # noqa: BLE001 - one failed variant (OOM, compile error) must not lose the rest
            result = {"mode": mode, "batch_per_gpu": int(batch), "error": f"{type(err).__name__}: {err}"[:1500]}
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if rt.is_main:
            if "samples_per_s" in result and "samples_per_s" in report.get("baseline", {}):
                result["speedup_vs_seed"] = round(result["samples_per_s"] / report["baseline"]["samples_per_s"], 1)
            print(json.dumps({k: v for k, v in result.items() if k != "profile"}), flush=True)
            with open(args.out, "a") as f:  # one line per variant, so a later hang loses nothing
                f.write(json.dumps({"kind": "variant", **{k: v for k, v in report.items() if k != "variants"},
                                    **result}) + "\n")
    if rt.distributed:
        dist.destroy_process_group()


def scratch_cfg(args, tokenizer):
    from floe_trainer.modeling import SHAPES
    from transformers import T5Config

    return T5Config(vocab_size=len(tokenizer), **SHAPES[ScratchShape(args.shape)])


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
