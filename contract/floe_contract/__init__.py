"""What floe's operator, trainer and deployer agree on, declared once: the API group and version, the paths
in the pods (floe_contract.paths), and the models of the FineTuneJob's training settings
(floe_contract.training) and of the SnowflakeDeployment's target (floe_contract.deployment).

The operator's CRDs embed these models, and the configs it renders for the trainer and the deployer are
these models plus runtime fields. Depends on pydantic only: the trainer image installs it without the
operator.
"""

GROUP = "floe.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
