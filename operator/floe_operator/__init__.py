"""floe operator: fine-tunes open language models on Kubernetes and deploys them to Snowflake."""

from floe_contract import API_VERSION, GROUP, VERSION

__all__ = ["API_VERSION", "GROUP", "VERSION"]
