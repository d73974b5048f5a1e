"""The SnowflakeDeployment's target and the UDF's generation settings, declared once in
floe_contract.deployment: the CRD embeds the target and the deployer's config is it plus runtime fields."""

import pytest
from floe_contract.deployment import STAGING_SUFFIX_LENGTH, FunctionTarget, Generation
from pydantic import ValidationError

TARGET = {"database": "ML", "schema": "PUBLIC", "stage": "MODELS", "functionName": "SUMMARIZE"}


def error_text(model, data) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return str(caught.value)


@pytest.mark.parametrize("field", ["database", "stage", "functionName"])
def test_what_the_deployer_needs_is_required(field):
    missing = {key: value for key, value in TARGET.items() if key != field}
    assert f"{field}\n  Field required" in error_text(FunctionTarget, missing)


@pytest.mark.parametrize("field", ["database", "schema", "stage", "functionName"])
@pytest.mark.parametrize("name", ['X"; DROP FUNCTION Y; --', "ML.PUBLIC", "has space", "1ST", "ok\n"])
def test_names_are_unquoted_identifiers(field, name):
    message = error_text(FunctionTarget, {**TARGET, field: name})
    assert field in message and "is not a valid Snowflake identifier" in message


def test_the_function_name_leaves_room_for_its_staging_name():
    longest = "F" * (255 - STAGING_SUFFIX_LENGTH)
    assert FunctionTarget.model_validate({**TARGET, "functionName": longest}).function_name == longest
    assert "functionName" in error_text(FunctionTarget, {**TARGET, "functionName": longest + "F"})


def test_mode_is_local_or_account():
    assert FunctionTarget.model_validate(TARGET).mode is None
    assert "mode" in error_text(FunctionTarget, {**TARGET, "mode": "cloud"})


@pytest.mark.parametrize("data", [{"numBeams": 0}, {"batchSize": 257}, {"backend": "tensorrt"}, {"beams": 2}])
def test_generation_settings_are_bounded(data):
    error_text(Generation, data)
