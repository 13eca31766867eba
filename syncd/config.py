"""Configuration: one YAML file, overridable from the environment, validated up front.

Every problem is reported as `ConfigError` naming the key path (``keycloak.url``)
and the reason, before syncd opens a single connection. Precedence, highest
first: environment variables (``SYNCD_<SECTION>__<KEY>``, e.g.
``SYNCD_KEYCLOAK__CLIENT_SECRET``), then the YAML file, then defaults. Secrets
come either inline (env is preferred) or from a file (``*_file`` keys, for
Kubernetes secret mounts); files are read here so that a missing mount fails
the start rather than the first sync.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from syncd.errors import ConfigError

ENV_PREFIX = "SYNCD_"
CONFIG_ENV = "SYNCD_CONFIG"


def _check_url(value: str) -> str:
    """Accept only absolute http(s) URLs; a typo here would otherwise surface as a
    confusing connection error on the first sync."""
    try:
        url = httpx.URL(value)
    except Exception as exc:  # httpx raises InvalidURL and friends
        raise ValueError(f"not a valid URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value.rstrip("/")


HttpUrlStr = Annotated[str, AfterValidator(_check_url)]
_DURATION = re.compile(r"^\d+(s|m|h|d|w|mo)$")


def _check_duration(value: str | None) -> str | None:
    if value is not None and not _DURATION.match(value):
        raise ValueError("must look like 30d, 12h, 1mo (LiteLLM budget_duration)")
    return value


class Section(BaseModel):
    """Base for all sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TLS(Section):
    verify_tls: bool = True
    ca_bundle: Path | None = None

    def httpx_verify(self) -> bool | str:
        """What httpx's ``verify=`` wants: a CA bundle path wins over the flag."""
        if self.ca_bundle is not None:
            return str(self.ca_bundle)
        return self.verify_tls


def _read_secret(inline: SecretStr | None, path: Path | None, key: str) -> SecretStr:
    if inline is not None and path is not None:
        raise ValueError(f"set either {key} or {key}_file, not both")
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"{key}_file: cannot read {path}: {exc.strerror}") from None
        if not text:
            raise ValueError(f"{key}_file: {path} is empty")
        return SecretStr(text)
    if inline is None or not inline.get_secret_value():
        raise ValueError(
            f"{key} is required (set {key}, {key}_file, or the environment variable)"
        )
    return inline


class KeycloakSettings(TLS):
    url: HttpUrlStr
    realm: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)
    page_size: int = Field(default=100, ge=1, le=1000)
    concurrency: int = Field(default=8, ge=1, le=64)

    @model_validator(mode="after")
    def _resolve_secret(self) -> KeycloakSettings:
        secret = _read_secret(self.client_secret, self.client_secret_file, "client_secret")
        object.__setattr__(self, "client_secret", secret)
        object.__setattr__(self, "client_secret_file", None)
        return self

    def secret(self) -> str:
        assert self.client_secret is not None  # resolved by the validator
        return self.client_secret.get_secret_value()


class LiteLLMSettings(TLS):
    url: HttpUrlStr
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    page_size: int = Field(default=100, ge=1, le=100)
    concurrency: int = Field(default=8, ge=1, le=64)
    changed_by: str = Field(default="syncd", min_length=1)
    enterprise_license: bool = False

    @model_validator(mode="after")
    def _resolve_secret(self) -> LiteLLMSettings:
        secret = _read_secret(self.api_key, self.api_key_file, "api_key")
        object.__setattr__(self, "api_key", secret)
        object.__setattr__(self, "api_key_file", None)
        return self

    def key(self) -> str:
        assert self.api_key is not None
        return self.api_key.get_secret_value()


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"group path {value!r} must start with '/'")
    return value.rstrip("/") or "/"


GroupPath = Annotated[str, AfterValidator(_check_path)]


class SelectionSettings(Section):
    """Which Keycloak groups become teams: by path prefix or by a group attribute."""

    path_prefixes: list[GroupPath] = Field(default_factory=list)
    attribute: str | None = "litellm.sync"
    exclude_paths: list[GroupPath] = Field(default_factory=list)
    flatten: bool = False

    @model_validator(mode="after")
    def _some_selector(self) -> SelectionSettings:
        if not self.path_prefixes and not self.attribute:
            raise ValueError("select groups with path_prefixes, attribute, or both")
        return self


class TeamSettingsSpec(Section):
    """LiteLLM team settings syncd enforces; a field left unset is not managed."""

    models: list[str] | None = None
    max_budget: float | None = Field(default=None, ge=0)
    budget_duration: Annotated[str | None, AfterValidator(_check_duration)] = None
    tpm_limit: int | None = Field(default=None, ge=0)
    rpm_limit: int | None = Field(default=None, ge=0)


class TeamsSettings(Section):
    alias_from: Literal["name", "path"] = "name"
    adopt_existing: bool = False
    attribute_prefix: str = "litellm."
    defaults: TeamSettingsSpec = TeamSettingsSpec()
    overrides: dict[GroupPath, TeamSettingsSpec] = Field(default_factory=dict)
    removed_policy: Literal["block", "delete"] = "block"
    removed_grace_days: float = Field(default=30.0, ge=0)


class MembersSettings(Section):
    default_role: Literal["user", "admin"] = "user"
    admin_subgroup: str | None = None


class DeparturesSettings(Section):
    policy: Literal["block", "delete"] = "block"
    grace_days: float = Field(default=30.0, ge=0)
    delete_users: bool = False
    ignore_users: list[str] = Field(default_factory=list)


class UsersSettings(Section):
    """How a Keycloak user is found in LiteLLM (see syncd/identity.py).

    ``id_from`` picks the LiteLLM ``user_id`` of a Keycloak user: the Keycloak
    user ``id`` (default), the ``username``, or the ``email``; choose what the
    proxy's SSO login already writes, so SSO and syncd name a person alike.
    ``link_by_email`` (opt-in) also takes over an existing LiteLLM user whose
    email matches exactly (case-insensitively) when nobody else claims it.
    """

    id_from: Literal["id", "username", "email"] = "id"
    link_by_email: bool = False


_RENAMED_SAFETY = {
    "max_destructive_ops": "max_blocked (users and teams cut off) and max_deleted",
    "max_destructive_fraction": "max_blocked_fraction and max_deleted_fraction",
}


class SafetySettings(Section):
    """The brake counts users and teams affected, not API calls; deletions and
    removals (irreversible) have their own, stricter limits."""

    max_blocked: int = Field(default=25, ge=0, le=1_000_000)
    max_blocked_fraction: float = Field(default=0.10, ge=0, le=1)
    max_deleted: int = Field(default=10, ge=0, le=1_000_000)
    max_deleted_fraction: float = Field(default=0.05, ge=0, le=1)
    fraction_from_memberships: int = Field(default=100, ge=0, le=100_000_000)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in _RENAMED_SAFETY.items():
                if old in data:
                    raise ValueError(f"safety.{old} was replaced by {new} (they count people)")
        return data


def _check_cron(value: str | None) -> str | None:
    """Parse the crontab expression now, so `syncd validate` catches it too."""
    if value is not None:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a valid crontab expression ({exc})") from None
    return value


class ScheduleSettings(Section):
    interval_seconds: float = Field(default=300.0, gt=0)
    cron: Annotated[str | None, AfterValidator(_check_cron)] = None
    jitter_seconds: float = Field(default=30.0, ge=0)
    shutdown_timeout_seconds: float = Field(default=60.0, gt=0)


class ServerSettings(Section):
    host: str = "0.0.0.0"
    port: int = Field(default=9108, ge=0, le=65535)


class ReadinessSettings(Section):
    max_consecutive_failures: int = Field(default=3, ge=1)
    max_success_age_seconds: float = Field(default=1800.0, gt=0)


class PushgatewaySettings(Section):
    url: HttpUrlStr | None = None
    job: str = "syncd"
    timeout_seconds: float = Field(default=5.0, gt=0)


class RetrySettings(Section):
    max_attempts: int = Field(default=5, ge=1, le=20)
    initial_backoff_seconds: float = Field(default=0.5, ge=0)
    max_backoff_seconds: float = Field(default=30.0, ge=0)
    max_retries_per_run: int = Field(default=500, ge=0)


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


_yaml_data: ContextVar[dict[str, Any]] = ContextVar("_yaml_data", default={})  # noqa: B039


class _YamlSource(PydanticBaseSettingsSource):
    """Feeds the already-parsed YAML file in below the environment."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return _yaml_data.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_yaml_data.get())


class Settings(BaseSettings):
    """All of syncd's configuration; see config/syncd.example.yaml for every key."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    keycloak: KeycloakSettings
    litellm: LiteLLMSettings
    selection: SelectionSettings = SelectionSettings()
    teams: TeamsSettings = TeamsSettings()
    members: MembersSettings = MembersSettings()
    departures: DeparturesSettings = DeparturesSettings()
    users: UsersSettings = UsersSettings()
    safety: SafetySettings = SafetySettings()
    schedule: ScheduleSettings = ScheduleSettings()
    server: ServerSettings = ServerSettings()
    readiness: ReadinessSettings = ReadinessSettings()
    pushgateway: PushgatewaySettings = PushgatewaySettings()
    retries: RetrySettings = RetrySettings()
    logging: LoggingSettings = LoggingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


def _format_errors(exc: ValidationError, origin: str) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return f"invalid configuration ({origin}):\n" + "\n".join(lines)


def load_settings(
    path: Path | str | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Read, merge and validate configuration; raise `ConfigError` with key paths.

    ``path`` defaults to ``$SYNCD_CONFIG``; without either, only the environment
    is used (handy in containers that configure everything through env).
    """
    env = os.environ if environ is None else environ
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    data: dict[str, Any] = {}
    origin = "environment"
    if path is not None:
        origin = f"{path} and environment"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {path}: top level must be a mapping")
        data = loaded
    token = _yaml_data.set(data)
    saved_env = None
    if environ is not None:
        # pydantic-settings reads os.environ; swap it for an explicit mapping.
        saved_env = dict(os.environ)
        os.environ.clear()
        os.environ.update(environ)
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None
    finally:
        _yaml_data.reset(token)
        if saved_env is not None:
            os.environ.clear()
            os.environ.update(saved_env)
