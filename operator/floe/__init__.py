"""floe's Python API, for notebooks and scripts.

    import floe

    client = floe.Client()                    # in a Workspace: the notebook's identity; else your kubeconfig
    client.submit("t5-news", floe.FineTuneJobSpec(model=..., dataset=..., training=...))
    client.wait("t5-news")                    # a progress line; raises floe.JobFailed with the reason
    client.plot("t5-news")                    # the loss curve, inline
    client.predict("summarize", ["Heavy rain flooded the capital ..."])   # or a DataFrame with a text column

Importing it loads neither the Kubernetes client (until a Client is made) nor the operator's runtime.
"""

from floe_operator.api.finetunejob import FineTuneJobSpec

from floe.client import Client, FloeError, JobFailed, NoTrainerPods
from floe.history import TrainingHistory

__all__ = ["Client", "FineTuneJobSpec", "FloeError", "JobFailed", "NoTrainerPods", "TrainingHistory"]
