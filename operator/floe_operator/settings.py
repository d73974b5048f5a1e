"""Operator settings from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_TRAINER_IMAGE = "ghcr.io/floe-dev/floe-trainer:0.1.0"


@dataclass(frozen=True)
class OperatorSettings:
    trainer_image: str
    image_pull_policy: str
    metrics_port: int

    @classmethod
    def from_env(cls) -> OperatorSettings:
        return cls(
            trainer_image=os.environ.get("FLOE_TRAINER_IMAGE", DEFAULT_TRAINER_IMAGE),
            image_pull_policy=os.environ.get("FLOE_IMAGE_PULL_POLICY", "IfNotPresent"),
            metrics_port=int(os.environ.get("FLOE_METRICS_PORT", "8000")),
        )
