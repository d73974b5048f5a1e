"""Paths inside floe's pods that the operator's builders mount and the trainer and deployer read."""

CONFIG_DIR = "/etc/floe"
TRAINER_CONFIG_FILE = "job.json"  # the trainer's config (floe_trainer.config), in CONFIG_DIR
DEPLOY_CONFIG_FILE = "deploy.json"  # the deployer's config (floe_trainer.deploy), in CONFIG_DIR
TRAINER_CONFIG_PATH = f"{CONFIG_DIR}/{TRAINER_CONFIG_FILE}"
DATA_DIR = "/var/run/floe/data"  # spec.dataset.file.claimName, read-only
OUTPUT_DIR = "/var/run/floe/output"  # spec.storage.claimName: checkpoints and the trained model
SNOWFLAKE_DIR = "/var/run/floe/snowflake"  # the Snowflake connection Secret
MODEL_MOUNT = "/var/run/floe/model"  # the deployer's model claim, read-only
CACHE_DIR = "/var/cache/floe"
TERMINATION_LOG = "/dev/termination-log"
# Where Kubernetes clients look for a pod's ServiceAccount token, CA and namespace (in-cluster config).
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNT_NAMESPACE = f"{SERVICE_ACCOUNT_DIR}/namespace"
