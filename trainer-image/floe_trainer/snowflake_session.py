"""Where the deployer meets Snowflake: the connection Secret, and the one adapter that hides whether the
target is a real account or Snowpark's local testing emulator.

Connection: a Kubernetes Secret mounted as a directory, one file per key (`account`, `user`, `role`,
`warehouse`, `database`, `schema`, optional `host`/`port` for private endpoints (`protocol` `http` only for
a server on the loopback interface, such as a local test server), and one of `private_key`
(PEM, optionally encrypted with `private_key_passphrase`), `token` (OAuth) or `password`; or `mode` =
`local`). Secret values are held as `SecretStr` and scrubbed from every error we raise.

`SnowflakeTarget` is the adapter. What the emulator lacks, and how `LocalTarget` stands in:
- no SQL at all (SHOW, CREATE/DROP FUNCTION, CREATE STAGE): functions are registered through
  `session.udf.register_from_file`, and what an account keeps of a function (its imports, packages, and
  the digest and owner that SHOW reads from its COMMENT) is kept in the state directory, one JSON file per
  function (`functions/DB.SCHEMA.NAME.json`, written whole by rename, so deploy Jobs of other functions
  and a reader never see a half-written registry);
- no permanent UDFs: the emulator forgets everything when the process ends, so with a state directory
  (the local "account", on a volume) the uploaded files are copied there (`stage/`) and recorded functions
  are registered again when a target opens; a staged file no function imports any more is removed with
  the last function that imported it;
- stages are created on first use (an account needs CREATE STAGE IF NOT EXISTS);
- vectorized UDFs are called once per row with a plain value (the handler accepts both);
- every module a query imports is removed from sys.modules after it, so the handler's model cache is
  created before the first query.
Uploading (`session.file.put`) and calling (`call_udf` through the DataFrame API) are shared code.
"""

from __future__ import annotations

import json
import logging
import shutil
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, model_validator

from floe_trainer import udf_handler
from floe_trainer.identifiers import (
    SIGNATURE,
    FloeComment,
    FunctionName,
    create_function_sql,
    create_stage_sql,
    drop_function_sql,
    show_functions_sql,
    string_literal,
)

PLAIN_KEYS = ("mode", "account", "user", "role", "warehouse", "database", "schema", "host", "port", "protocol")
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
SECRET_KEYS = ("private_key", "private_key_passphrase", "token", "password")
HANDLER = "udf_handler.summarize"
LOCAL_DISTRIBUTIONS = {"pytorch": "torch"}  # Anaconda-channel name -> installed distribution, where they differ


class SnowflakeConnectionError(RuntimeError):
    """A connection problem whose message has been scrubbed of every secret value."""


class ConnectionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["local", "account"]
    account: str | None = None
    user: str | None = None
    role: str | None = None
    warehouse: str | None = None
    database: str | None = None
    schema_: str | None = None
    host: str | None = None
    port: int | None = None
    protocol: Literal["https", "http"] | None = None
    private_key: SecretStr | None = None
    private_key_passphrase: SecretStr | None = None
    token: SecretStr | None = None
    password: SecretStr | None = None

    @model_validator(mode="after")
    def _complete(self) -> ConnectionSettings:
        if self.mode == "local":
            return self
        missing = [key for key in ("account", "user") if not getattr(self, key)]
        if missing:
            raise ValueError(f"connection secret: missing key(s) {missing} for mode account")
        given = [key for key in ("private_key", "token", "password") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(
                f"connection secret: set exactly one of private_key, token, password (got {given or 'none'})"
            )
        if self.private_key_passphrase is not None and self.private_key is None:
            raise ValueError("connection secret: private_key_passphrase is set without private_key")
        # credentials cross the network in the clear over http
        if self.protocol == "http" and self.host not in LOOPBACK_HOSTS:
            raise ValueError(f"connection secret: protocol http is allowed only with a host in {list(LOOPBACK_HOSTS)}")
        return self

    def secret_values(self) -> list[str]:
        values = [getattr(self, key) for key in SECRET_KEYS]
        return [value.get_secret_value() for value in values if value is not None and value.get_secret_value()]


def read_connection_dir(directory: Path, mode: Literal["local", "account"] | None) -> ConnectionSettings:
    """Settings from a mounted Secret; with no account configured (or mode local) the emulator is used."""
    values: dict[str, str] = {}
    if directory.is_dir():
        for key in (*PLAIN_KEYS, *SECRET_KEYS):
            path = directory / key
            if path.is_file():
                values[key] = path.read_text().strip() if key != "private_key" else path.read_text()
    secret_mode = values.pop("mode", None)
    if secret_mode not in (None, "local", "account"):
        raise ValueError(f"connection secret: mode must be local or account (got {secret_mode!r})")
    chosen = mode or secret_mode or ("account" if values.get("account") else "local")
    if chosen == "local":
        return ConnectionSettings(mode="local", database=values.get("database"), schema_=values.get("schema"))
    if "schema" in values:
        values["schema_"] = values.pop("schema")
    try:
        return ConnectionSettings(mode="account", **values)
    except ValidationError as error:  # pydantic's own message would echo the input, secrets included
        problems = [
            (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
            for e in error.errors()
        ]
        raise ValueError("; ".join(problems)) from None


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
        for line in secret.splitlines():  # a PEM may be quoted line by line
            if len(line.strip()) >= 8:
                text = text.replace(line.strip(), "***")
    return text


def _private_key_der(settings: ConnectionSettings) -> bytes:
    from cryptography.hazmat.primitives import serialization

    passphrase = settings.private_key_passphrase
    try:
        key = serialization.load_pem_private_key(
            settings.private_key.get_secret_value().encode(),
            password=passphrase.get_secret_value().encode() if passphrase else None,
        )
    except (ValueError, TypeError) as error:
        # cryptography's messages name no key material, but say nothing more than the kind of failure
        raise SnowflakeConnectionError(
            f"connection secret: private_key could not be loaded ({type(error).__name__}: "
            "wrong passphrase, missing passphrase, or not a PEM private key)"
        ) from None
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def session_options(settings: ConnectionSettings, login_timeout_s: int = 60) -> dict[str, object]:
    """Snowpark Session options: the local testing emulator (telemetry off), or the account with one of
    key pair, OAuth token or password."""
    if settings.mode == "local":
        options: dict[str, object] = {"local_testing": True, "disable_local_testing_telemetry": True}
        options.update({k: v for k, v in (("database", settings.database), ("schema", settings.schema_)) if v})
        return options
    options = {
        "account": settings.account,
        "user": settings.user,
        "login_timeout": login_timeout_s,
        "application": "floe",
    }
    for key in ("role", "warehouse", "database", "host", "port", "protocol"):
        if getattr(settings, key):
            options[key] = getattr(settings, key)
    if settings.schema_:
        options["schema"] = settings.schema_
    if settings.private_key is not None:
        options["private_key"] = _private_key_der(settings)
    elif settings.token is not None:
        options.update(authenticator="oauth", token=settings.token.get_secret_value())
    else:
        options["password"] = settings.password.get_secret_value()
    return options


def packages_sql(names: list[str]) -> str:
    """The versions of these packages that Snowflake's Anaconda channel offers to Python UDFs."""
    listed = ", ".join(string_literal(name) for name in names)
    return (
        'SELECT package_name AS "PACKAGE_NAME", version AS "VERSION" FROM information_schema.packages '
        f"WHERE language = 'python' AND package_name IN ({listed})"
    )


def open_session(settings: ConnectionSettings, login_timeout_s: int = 60):
    """A Snowpark Session for the account, or the local testing emulator."""
    from snowflake.snowpark import Session

    # The connector logs request details at DEBUG; the deployer's own output is the JSON result.
    logging.getLogger("snowflake").setLevel(logging.WARNING)
    options = session_options(settings, login_timeout_s)
    if settings.mode == "local":
        return Session.builder.configs(options).create()
    try:
        return Session.builder.configs(options).create()
    except Exception as error:  # noqa: BLE001 - any connector failure becomes one scrubbed error
        message = scrub(f"{type(error).__name__}: {error}", settings.secret_values())
        raise SnowflakeConnectionError(
            f"could not connect to Snowflake account {settings.account!r}: {message}"
        ) from None


@dataclass(frozen=True)
class FunctionSpec:
    """What a UDF is made of: staged imports (model zip, handler module, batch size) and pinned packages."""

    function: FunctionName
    model_zip: str  # stage path
    handler_module: str  # stage path
    packages: tuple[str, ...]
    runtime_version: str
    digest: str
    owner: str | None = None  # namespace/name/uid of the SnowflakeDeployment
    batch_file: str | None = None  # stage path of udf_handler.BATCH_FILE
    max_batch_size: int | None = None  # what batch_file says

    @property
    def imports(self) -> list[str]:
        return [self.model_zip, self.handler_module, *([self.batch_file] if self.batch_file else [])]

    @property
    def comment(self) -> FloeComment:
        return FloeComment(self.digest, self.owner)


@dataclass(frozen=True)
class ExistingFunction:
    """A function found in the schema, as SHOW lists it."""

    comment: str | None

    @property
    def floe(self) -> FloeComment | None:
        """What floe recorded in the comment; None when floe did not write it."""
        return FloeComment.parse(self.comment)


class SnowflakeTarget(ABC):
    """The deployer's view of Snowflake; subclasses hold every difference between account and emulator."""

    def __init__(self, session):
        self.session = session

    @abstractmethod
    def ensure_stage(self, database: str, schema: str, stage: str) -> None: ...

    @abstractmethod
    def existing(self, function: FunctionName) -> ExistingFunction | None:
        """The function of this name and signature, None when there is none."""

    @abstractmethod
    def create_function(self, spec: FunctionSpec) -> None:
        """Create or replace the function."""

    @abstractmethod
    def drop_function(self, function: FunctionName) -> None: ...

    @abstractmethod
    def available_packages(self, names: list[str]) -> dict[str, list[str]]:
        """The versions of these Anaconda-channel packages a UDF's PACKAGES can name."""

    def upload(self, local_file: Path, stage_dir: str) -> None:
        self.session.file.put(str(local_file), stage_dir, auto_compress=False, overwrite=True)

    def call(self, function: FunctionName, texts: list[str]) -> list[str | None]:
        """Call the function through the DataFrame API, one row per text, in order."""
        from snowflake.snowpark.functions import call_udf, col

        frame = self.session.create_dataframe([[i, t] for i, t in enumerate(texts)], schema=["ID", "TEXT"])
        rows = frame.select(col("ID"), call_udf(function.qualified, col("TEXT")).alias("SUMMARY")).collect()
        by_id = {row["ID"]: row["SUMMARY"] for row in rows}
        return [by_id.get(i) for i in range(len(texts))]

    def close(self) -> None:
        self.session.close()


class AccountTarget(SnowflakeTarget):
    """A real account: SQL for stages and functions; the model digest lives in the function's COMMENT."""

    def ensure_stage(self, database: str, schema: str, stage: str) -> None:
        self.session.sql(create_stage_sql(database, schema, stage)).collect()

    def existing(self, function: FunctionName) -> ExistingFunction | None:
        # LIKE treats `_` as a wildcard and other signatures (overloads) share the name: match exactly
        signature = function.bare_name + SIGNATURE
        for row in self.session.sql(show_functions_sql(function)).collect():
            if row["name"] == function.bare_name and row["arguments"].startswith(signature):
                return ExistingFunction(row["description"])
        return None

    def available_packages(self, names: list[str]) -> dict[str, list[str]]:
        rows = self.session.sql(packages_sql(names)).collect()
        found: dict[str, list[str]] = {}
        for row in rows:
            found.setdefault(row["PACKAGE_NAME"], []).append(row["VERSION"])
        return found

    def create_function(self, spec: FunctionSpec) -> None:
        sql = create_function_sql(
            spec.function,
            imports=spec.imports,
            packages=list(spec.packages),
            handler=HANDLER,
            runtime_version=spec.runtime_version,
            comment=spec.comment.render(),
        )
        self.session.sql(sql).collect()

    def drop_function(self, function: FunctionName) -> None:
        self.session.sql(drop_function_sql(function)).collect()


class LocalTarget(SnowflakeTarget):
    """The Snowpark local testing emulator, made to remember functions in `state_dir` (if given)."""

    def __init__(self, session, state_dir: Path | None = None):
        super().__init__(session)
        # The emulator drops every sys.modules entry a query adds; the handler's model cache must exist
        # before the first query to survive it (in Snowflake a process keeps its modules).
        udf_handler._runtime()
        self.state_dir = state_dir
        self.functions: dict[str, dict] = self._recorded() if state_dir is not None else {}
        for record in self.functions.values():
            self._register(_spec(record), restore=True)

    def _recorded(self) -> dict[str, dict]:
        """The functions the state directory records, by qualified name, as saved now (other processes
        deploying other functions save theirs meanwhile)."""
        directory = self.state_dir / "functions"
        records = [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]
        return {_spec(record).function.qualified: record for record in records}

    def _record_file(self, function: FunctionName) -> Path:
        unquoted = function.qualified.replace('"', "")
        return self.state_dir / "functions" / f"{unquoted}.json"

    def _copy_path(self, stage_path: str) -> Path:
        return self.state_dir / "stage" / stage_path.lstrip("@").replace('"', "")

    def ensure_stage(self, database: str, schema: str, stage: str) -> None:
        """The emulator creates a stage on first use."""

    def available_packages(self, names: list[str]) -> dict[str, list[str]]:
        """The emulator runs the handler in this process: what is installed here is what it has."""
        found = {}
        for name in names:
            try:
                found[name] = [metadata.version(LOCAL_DISTRIBUTIONS.get(name, name)).split("+")[0]]
            except metadata.PackageNotFoundError:
                pass
        return found

    def upload(self, local_file: Path, stage_dir: str) -> None:
        super().upload(local_file, stage_dir)
        if self.state_dir is not None:
            copy = self._copy_path(f"{stage_dir}/{local_file.name}")
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local_file, copy)

    def existing(self, function: FunctionName) -> ExistingFunction | None:
        record = self.functions.get(function.qualified)
        return ExistingFunction(FloeComment(record["digest"], record.get("owner")).render()) if record else None

    def _register(self, spec: FunctionSpec, restore: bool = False) -> None:
        from snowflake.snowpark.types import StringType

        if restore:  # a new process: put the remembered files back into the emulator's stages
            for stage_path in spec.imports:
                stage_dir, _ = stage_path.rsplit("/", 1)
                super().upload(self._copy_path(stage_path), stage_dir)
        self.session.udf.register_from_file(
            spec.handler_module,
            HANDLER.split(".")[1],
            return_type=StringType(),
            input_types=[StringType()],
            imports=[path for path in spec.imports if path != spec.handler_module],
            name=spec.function.qualified,
            replace=True,
            max_batch_size=spec.max_batch_size,
        )

    def create_function(self, spec: FunctionSpec) -> None:
        self._register(spec)
        replaced = self.functions.get(spec.function.qualified)
        self.functions[spec.function.qualified] = asdict(spec)
        self._save(spec.function, replaced)

    def drop_function(self, function: FunctionName) -> None:
        # The emulator has no DROP FUNCTION; its registry is the only place a function lives.
        self.session.udf._registry.pop(function.qualified, None)
        dropped = self.functions.pop(function.qualified, None)
        self._save(function, dropped)

    def _save(self, function: FunctionName, previous: dict | None) -> None:
        """Write (or remove) the function's record, then remove the staged copies `previous` imported
        that no recorded function imports any more."""
        if self.state_dir is None:
            return
        path = self._record_file(function)
        record = self.functions.get(function.qualified)
        if record is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            partial.write_text(json.dumps(record, indent=1, sort_keys=True))
            partial.replace(path)
        if previous is not None:
            in_use = {p for other in self._recorded().values() for p in _spec(other).imports}
            for stage_path in set(_spec(previous).imports) - in_use:
                self._copy_path(stage_path).unlink(missing_ok=True)


def _spec(record: dict) -> FunctionSpec:
    return FunctionSpec(
        **{**record, "function": FunctionName(**record["function"]), "packages": tuple(record["packages"])}
    )


def open_target(
    settings: ConnectionSettings, local_state_dir: Path | None = None, login_timeout_s: int = 60
) -> SnowflakeTarget:
    session = open_session(settings, login_timeout_s)
    if settings.mode == "local":
        return LocalTarget(session, local_state_dir)
    return AccountTarget(session)
