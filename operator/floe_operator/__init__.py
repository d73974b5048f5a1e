"""floe operator: fine-tunes open language models on Kubernetes and deploys them to Snowflake."""

GROUP = "floe.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
