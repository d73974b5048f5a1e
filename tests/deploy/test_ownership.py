"""Functions across owners, on Snowpark's local testing emulator: a SnowflakeDeployment replaces or drops
only the functions it deployed, and drops its previous function when its target name changes."""

import pytest
from floe_trainer.artifacts import content_digest
from floe_trainer.deploy import DeployError, deploy, drop
from floe_trainer.identifiers import FloeComment
from floe_trainer.snowflake_session import ConnectionSettings, open_target

from .test_emulator import config

ALICE = "team-a/summarize/7f1c2a9e-0d7b-4c55-9f3e-1a2b3c4d5e6f"
MALLORY = "team-b/summarize/0b9d8c7e-6f5a-4b3c-8d2e-9f8e7d6c5b4a"
SUMMARIZE = '"ANALYTICS"."PUBLIC"."SUMMARIZE"'  # as status.functionName records it


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    target = open_target(ConnectionSettings(mode="local"), tmp_path_factory.mktemp("state"))
    yield target
    target.close()


def owner_of(target, function_name: str) -> str | None:
    found = target.existing(config("/unused", functionName=function_name).function)
    return found.floe.owner if found else "absent"


def test_the_deployer_records_its_owner(target, model_dir):
    result = deploy(config(model_dir, owner=ALICE), target)
    assert result["outcome"] == "Deployed"
    found = target.existing(config(model_dir).function)
    assert found.floe == FloeComment(found.floe.digest, ALICE)
    assert found.comment.endswith(f" owner:{ALICE}")


def test_another_owner_can_neither_replace_nor_drop_it(target, model_dir, other_model_dir):
    with pytest.raises(DeployError, match=f"refusing to replace .*SUMMARIZE.: it belongs to {ALICE}"):
        deploy(config(other_model_dir, owner=MALLORY), target)
    with pytest.raises(DeployError, match=f"refusing to drop .*SUMMARIZE.*: it belongs to {ALICE}, not to {MALLORY}"):
        drop(config(model_dir, owner=MALLORY), target)
    # a config without an owner (an older operator) is no owner at all, not a wildcard
    with pytest.raises(DeployError, match="not to no recorded owner"):
        drop(config(model_dir), target)
    assert owner_of(target, "summarize") == ALICE
    assert target.call(config(model_dir).function, ["Rain again."])[0] is not None


def test_the_same_model_under_another_owner_is_not_unchanged(target, model_dir):
    with pytest.raises(DeployError, match="it belongs to"):
        deploy(config(model_dir, owner=MALLORY), target)


def test_a_new_target_name_drops_the_previous_function_it_owns(target, model_dir):
    renamed = config(model_dir, owner=ALICE, functionName="summarize_v2", previousFunction=SUMMARIZE)
    result = deploy(renamed, target)
    assert result["outcome"] == "Deployed"
    assert result["message"].endswith('dropped the previous function "ANALYTICS"."PUBLIC"."SUMMARIZE"')
    assert (owner_of(target, "summarize"), owner_of(target, "summarize_v2")) == ("absent", ALICE)


def test_the_previous_function_of_another_owner_is_kept(target, model_dir):
    deploy(config(model_dir, owner=MALLORY, functionName="theirs"), target)
    ours = {"owner": ALICE, "functionName": "summarize_v2"}
    result = deploy(config(model_dir, **ours, previousFunction="ANALYTICS.PUBLIC.THEIRS"), target)
    assert result["outcome"] == "Unchanged" and "kept" in result["message"]
    dropped = drop(config(model_dir, **ours, previousFunction="analytics.public.theirs"), target)
    assert dropped["outcome"] == "Dropped"
    assert dropped["message"].endswith('kept "ANALYTICS"."PUBLIC"."THEIRS", which it does not own')
    assert (owner_of(target, "summarize_v2"), owner_of(target, "theirs")) == ("absent", MALLORY)


def test_only_the_approved_model_is_deployed(target, model_dir, other_model_dir):
    approved = content_digest(model_dir)
    with pytest.raises(DeployError, match=f"spec.approval.modelDigest: {approved} was approved, but the model in"):
        deploy(config(other_model_dir, owner=ALICE, functionName="approved", approvedModelDigest=approved), target)
    assert owner_of(target, "approved") == "absent"
    result = deploy(config(model_dir, owner=ALICE, functionName="approved", approvedModelDigest=approved), target)
    assert result["outcome"] == "Deployed" and result["modelDigest"] == approved
