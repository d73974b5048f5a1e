"""A FineTuneJob's events find its SnowflakeDeployments in an index, keyed by namespace and FineTuneJob name."""

import asyncio

from floe_operator.handlers import snowflakedeployment


def deployments_of_finetunejobs(**kwargs) -> dict:
    return asyncio.run(snowflakedeployment.deployments_of_finetunejobs(**kwargs))


def test_a_deployment_is_indexed_under_the_finetunejob_it_deploys():
    spec = {"source": {"fineTuneJobRef": {"name": "news-tiny"}}, "snowflake": {"mode": "local"}}
    assert deployments_of_finetunejobs(namespace="lab", name="news", spec=spec) == {("lab", "news-tiny"): "news"}


def test_a_deployment_of_a_model_uri_is_under_no_finetunejob():
    # {} and not None: a deployment whose reference was removed leaves the index (None would keep its old key).
    spec = {"source": {"modelUri": "pvc://models/news"}}
    assert deployments_of_finetunejobs(namespace="lab", name="uri", spec=spec) == {}
    assert deployments_of_finetunejobs(namespace="lab", name="bare", spec={}) == {}
