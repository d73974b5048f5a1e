import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from floe_trainer.snowflake_session import (
    SnowflakeConnectionError,
    _private_key_der,
    read_connection_dir,
    scrub,
    session_options,
)

PASSWORD = "hunter2-very-secret"


def secret_dir(tmp_path, **files):
    tmp_path.mkdir(parents=True, exist_ok=True)
    for key, value in files.items():
        (tmp_path / key).write_text(value)
    return tmp_path


def test_no_secret_or_no_account_means_the_local_emulator(tmp_path):
    assert read_connection_dir(tmp_path / "missing", None).mode == "local"
    assert read_connection_dir(secret_dir(tmp_path, database="DB"), None).mode == "local"


def test_mode_local_wins_over_an_account(tmp_path):
    settings = read_connection_dir(secret_dir(tmp_path, mode="local", account="acme", password=PASSWORD), None)
    assert settings.mode == "local" and settings.secret_values() == []


def test_account_with_password(tmp_path):
    settings = read_connection_dir(
        secret_dir(tmp_path, account="acme-x1", user="bob", role="DEPLOYER", schema="PUBLIC", password=PASSWORD), None
    )
    assert (settings.mode, settings.account, settings.schema_) == ("account", "acme-x1", "PUBLIC")
    assert settings.secret_values() == [PASSWORD]
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())


def test_exactly_one_credential(tmp_path):
    with pytest.raises(ValueError, match="exactly one of private_key, token, password") as error:
        read_connection_dir(secret_dir(tmp_path, account="a", user="u", password=PASSWORD, token="tok-secret"), None)
    assert PASSWORD not in str(error.value) and "tok-secret" not in str(error.value)


def test_account_mode_needs_an_account(tmp_path):
    with pytest.raises(ValueError, match="missing key"):
        read_connection_dir(secret_dir(tmp_path, user="u", password=PASSWORD), "account")


def encrypted_key(passphrase: bytes) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    ).decode()


def test_encrypted_private_key_is_decrypted_to_der(tmp_path):
    pem = encrypted_key(b"open-sesame-123")
    settings = read_connection_dir(
        secret_dir(tmp_path, account="a", user="u", private_key=pem, private_key_passphrase="open-sesame-123"), None
    )
    der = _private_key_der(settings)
    assert serialization.load_der_private_key(der, password=None).key_size == 2048


def test_wrong_passphrase_error_names_no_secret(tmp_path):
    pem = encrypted_key(b"right-passphrase")
    settings = read_connection_dir(
        secret_dir(tmp_path, account="a", user="u", private_key=pem, private_key_passphrase="wrong-passphrase"), None
    )
    with pytest.raises(SnowflakeConnectionError, match="private_key could not be loaded") as error:
        _private_key_der(settings)
    assert "wrong-passphrase" not in str(error.value) and "PRIVATE KEY" not in str(error.value)


def test_scrub_removes_values_and_pem_lines():
    pem = encrypted_key(b"x" * 12)
    line = pem.splitlines()[3]
    text = f"failed for {PASSWORD} with key line {line}"
    cleaned = scrub(text, [PASSWORD, pem])
    assert PASSWORD not in cleaned and line not in cleaned


def test_account_options_carry_each_way_of_logging_in(tmp_path):
    base = {"account": "acme-xy12345", "user": "deployer", "role": "ML", "warehouse": "WH", "database": "DB",
            "schema": "PUBLIC"}
    oauth = session_options(read_connection_dir(secret_dir(tmp_path / "o", **base, token="tok-secret"), None), 7)
    assert {k: oauth[k] for k in ("account", "user", "role", "warehouse", "database", "schema", "login_timeout")} == {
        **base, "login_timeout": 7}
    assert (oauth["authenticator"], oauth["token"]) == ("oauth", "tok-secret") and "password" not in oauth
    password = session_options(read_connection_dir(secret_dir(tmp_path / "p", **base, password=PASSWORD), None))
    assert password["password"] == PASSWORD and "authenticator" not in password
    pem = encrypted_key(b"open-sesame-123")
    keyed = session_options(read_connection_dir(
        secret_dir(tmp_path / "k", **base, private_key=pem, private_key_passphrase="open-sesame-123"), None))
    assert serialization.load_der_private_key(keyed["private_key"], password=None).key_size == 2048
    assert "password" not in keyed and "token" not in keyed
    local = session_options(read_connection_dir(secret_dir(tmp_path / "l", database="DB"), None))
    assert local == {"local_testing": True, "disable_local_testing_telemetry": True, "database": "DB"}



def test_plain_http_only_to_a_loopback_server(tmp_path):
    base = {"account": "acme", "user": "u", "password": PASSWORD, "protocol": "http"}
    with pytest.raises(ValueError, match="protocol http is allowed only with a host in") as error:
        read_connection_dir(secret_dir(tmp_path / "remote", **base, host="acme.snowflakecomputing.com"), None)
    assert PASSWORD not in str(error.value)
    with pytest.raises(ValueError, match="protocol http"):
        read_connection_dir(secret_dir(tmp_path / "default-host", **base), None)
    local = read_connection_dir(secret_dir(tmp_path / "local", **base, host="127.0.0.1", port="8080"), None)
    assert {k: v for k, v in session_options(local).items() if k in ("host", "port", "protocol")} == {
        "host": "127.0.0.1", "port": 8080, "protocol": "http"}
