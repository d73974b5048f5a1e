"""kopf handlers: the only code that talks to the API server. Importing this registers them all."""

from floe_operator.handlers import finetunejob, project, quota, snowflakedeployment, startup, workspace

__all__ = ["finetunejob", "project", "quota", "snowflakedeployment", "startup", "workspace"]
