"""`floe-train --config job.json`: validate the config first (exit 2 naming the field), then train."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from floe_contract.paths import TRAINER_CONFIG_PATH

from floe_trainer import prefetch
from floe_trainer.config import ConfigError, load_config
from floe_trainer.progress import write_termination_message

EXIT_FAILED, EXIT_BAD_CONFIG = 1, 2
# Preempted (SIGTERM) after checkpointing: the code of a process ended by SIGTERM, so the Job counts a failed
# pod and starts another, which resumes; exiting 0 would end the Job as if training had finished.
EXIT_PREEMPTED = 128 + 15


def _writes_termination_message() -> bool:
    # One process per pod writes it: torchrun's first local worker, or the only process.
    return os.environ.get("LOCAL_RANK", "0") == "0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="floe-train", description="Fine-tune a T5 summarizer (floe trainer).")
    parser.add_argument("--config", type=Path, default=Path(TRAINER_CONFIG_PATH), help="trainer config (JSON, v1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
    except ConfigError as err:
        message = str(err)
        print(f"floe-train: {message}", file=sys.stderr)
        if _writes_termination_message():
            write_termination_message("Failed", message, reason="InvalidConfig")
        return EXIT_BAD_CONFIG

    # The data is read and tokenized from here on, beside the heavy imports (only after the config is known good).
    prefetched = prefetch.start(cfg)
    from floe_trainer.data import DataError
    from floe_trainer.pretrained import ModelSourceError
    from floe_trainer.snowflake_session import SnowflakeConnectionError
    from floe_trainer.trainer import Preempted, train

    try:
        metrics = train(cfg, prefetched=prefetched)
    except Preempted as err:
        print(f"floe-train: {err}", file=sys.stderr)
        if _writes_termination_message():
            write_termination_message("Preempted", str(err), reason="Preempted")
        return EXIT_PREEMPTED
    except ConfigError as err:  # settings this run cannot meet (e.g. an effective batch the processes cannot split)
        print(f"floe-train: {err}", file=sys.stderr)
        if _writes_termination_message():
            write_termination_message("Failed", str(err), reason="InvalidConfig")
        return EXIT_BAD_CONFIG
    except (DataError, ModelSourceError, SnowflakeConnectionError, ValueError) as err:
        print(f"floe-train: {err}", file=sys.stderr)
        if _writes_termination_message():
            write_termination_message("Failed", str(err), reason=type(err).__name__)
        return EXIT_FAILED
    except BaseException as err:
        if _writes_termination_message():
            write_termination_message("Failed", f"{type(err).__name__}: {err}", reason=type(err).__name__)
        raise
    if _writes_termination_message() and metrics:
        write_termination_message("Succeeded", f"trained {metrics['steps']} steps", metrics, metrics["modelDigest"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
