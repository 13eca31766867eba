"""Configuration: one YAML file, overridable from the environment, validated up front.

Every problem is reported as `ConfigError` naming the key path (``keycloak.url``)
and the reason, before syncd opens a single connection. Precedence, highest
first: environment variables (``SYNCD_<SECTION>__<KEY>``, e.g.
``SYNCD_KEYCLOAK__CLIENT_SECRET``), then the YAML file, then defaults. Secrets
come either inline (env is preferred) or from a file (``*_file`` keys, for
Kubernetes secret mounts); files are read here so that a missing mount fails
the start rather than the first sync.

Bad input of any kind (a file that is not UTF-8 or over `MAX_CONFIG_BYTES`,
duplicate YAML keys, an unknown ``SYNCD_`` variable, invalid JSON in an
environment value, a non-finite or out-of-range number) is one `ConfigError`
whose message is a single line, so `syncd validate` and a real run answer the
same way, with exit 3, before any connection. syncd reads the environment itself
rather than through pydantic-settings' env source because that source ignores
misspelt variables and reports bad JSON without naming the variable.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import httpx
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from syncd.errors import ConfigError, ConfigFileTooLarge

ENV_PREFIX = "SYNCD_"
CONFIG_ENV = "SYNCD_CONFIG"
MAX_CONFIG_BYTES = 1024 * 1024  # a real file is a few KiB; 50 MB once took a minute and 1 GB
MAX_SECRET_BYTES = 64 * 1024
# SYNCD_ variables that are not settings: the config path and the dev tooling's own.
NOT_SETTINGS = frozenset({CONFIG_ENV, "SYNCD_CACHE_DIR", "SYNCD_JAVA_HOME", "SYNCD_NO_JDK_INSTALL"})
# Kubernetes service links for a Service named `syncd` (the chart turns them off with
# enableServiceLinks: false, other manifests may not): SYNCD_PORT, SYNCD_SERVICE_HOST, ...
_SERVICE_LINK = re.compile(
    r"SYNCD_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)"
)
MAX_ERRORS_SHOWN = 5

# Upper bounds: far above any sane value, low enough that timedelta, the scheduler and
# the HTTP client never overflow or wait for ever (grace_days: 1e10 used to exit 10).
MAX_DAYS = 3650.0  # ten years
MAX_TIMEOUT = 600.0  # one request
MAX_INTERVAL = 7 * 86400.0
MAX_WAIT = 3600.0  # jitter, backoff, shutdown
MAX_COUNT = 1_000_000


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

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    # old key -> what replaced it; such a key gets that hint instead of "unknown"
    RENAMED: ClassVar[dict[str, str]] = {}


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
            raw = _read_capped(path, MAX_SECRET_BYTES)
        except OSError as exc:
            raise ValueError(f"{key}_file: cannot read {path}: {exc.strerror}") from None
        except ConfigFileTooLarge:
            raise ValueError(f"{key}_file: {path} is over {MAX_SECRET_BYTES // 1024} KiB; "
                             "is it the right file?") from None
        try:
            text = raw.decode("utf-8-sig").strip()
        except UnicodeDecodeError:
            raise ValueError(f"{key}_file: {path} is not UTF-8 text") from None
        if not text:
            raise ValueError(f"{key}_file: {path} is empty")
        return SecretStr(text)
    if inline is None or not inline.get_secret_value():
        raise ValueError(
            f"{key} is required (set {key}, {key}_file, or the environment variable)"
        )
    return inline


def _with_secret(data: Any, key: str) -> Any:
    """The section's raw data with `key` resolved (inline, or read from
    ``<key>_file``) before the frozen model is built, so the model never has to
    be changed after construction. Values of the wrong type are left for the
    field validation to name."""
    if not isinstance(data, Mapping):
        return data
    inline, path = data.get(key), data.get(f"{key}_file")
    if not isinstance(inline, str | SecretStr | None) or not isinstance(path, str | Path | None):
        return data
    secret = _read_secret(
        SecretStr(inline) if isinstance(inline, str) else inline,
        Path(path) if path is not None else None,
        key,
    )
    return {**data, key: secret, f"{key}_file": None}


class KeycloakSettings(TLS):
    url: HttpUrlStr
    realm: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=MAX_TIMEOUT)
    page_size: int = Field(default=100, ge=1, le=1000)
    concurrency: int = Field(default=8, ge=1, le=64)

    @model_validator(mode="before")
    @classmethod
    def _resolve_secret(cls, data: Any) -> Any:
        return _with_secret(data, "client_secret")

    def secret(self) -> str:
        assert self.client_secret is not None  # resolved by the validator
        return self.client_secret.get_secret_value()


class LiteLLMSettings(TLS):
    url: HttpUrlStr
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    timeout_seconds: float = Field(default=30.0, gt=0, le=MAX_TIMEOUT)
    page_size: int = Field(default=100, ge=1, le=100)
    concurrency: int = Field(default=8, ge=1, le=64)
    changed_by: str = Field(default="syncd", min_length=1, max_length=200)
    enterprise_license: bool = False

    @model_validator(mode="before")
    @classmethod
    def _resolve_secret(cls, data: Any) -> Any:
        return _with_secret(data, "api_key")

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
    max_budget: float | None = Field(default=None, ge=0, le=1e12)
    budget_duration: Annotated[str | None, AfterValidator(_check_duration)] = None
    tpm_limit: int | None = Field(default=None, ge=0, le=10**12)
    rpm_limit: int | None = Field(default=None, ge=0, le=10**12)


class TeamsSettings(Section):
    alias_from: Literal["name", "path"] = "name"
    adopt_existing: bool = False
    attribute_prefix: str = "litellm."
    defaults: TeamSettingsSpec = TeamSettingsSpec()
    overrides: dict[GroupPath, TeamSettingsSpec] = Field(default_factory=dict)
    removed_policy: Literal["block", "delete"] = "block"
    removed_grace_days: float = Field(default=30.0, ge=0, le=MAX_DAYS)


class MembersSettings(Section):
    default_role: Literal["user", "admin"] = "user"
    admin_subgroup: str | None = None


class DeparturesSettings(Section):
    policy: Literal["block", "delete"] = "block"
    grace_days: float = Field(default=30.0, ge=0, le=MAX_DAYS)
    delete_users: bool = False
    ignore_users: list[str] = Field(default_factory=list)


class UsersSettings(Section):
    """How a Keycloak user is found in LiteLLM (see syncd/identity.py).

    ``id_from`` picks the LiteLLM ``user_id`` of a Keycloak user: the Keycloak
    user ``id`` (default), the ``username``, or the ``email``; choose what the
    proxy's SSO login already writes, so SSO and syncd name a person alike.
    ``link_by_email`` also takes over an existing LiteLLM user (an SSO login)
    whose email matches, case-insensitively, when nobody else claims it:
    ``verified`` (default) only when Keycloak marks the address verified, since
    a user who may edit their own email could otherwise claim another person's
    LiteLLM user; ``true`` whatever Keycloak says; ``false`` never. The booleans
    mean what they meant when the setting was one.
    """

    id_from: Literal["id", "username", "email"] = "id"
    link_by_email: Literal["verified", "true", "false"] = "verified"

    @field_validator("link_by_email", mode="before")
    @classmethod
    def _link_words(cls, value: Any) -> Any:
        # YAML reads `true`/`false` as booleans; the setting is a word.
        if isinstance(value, bool):
            return "true" if value else "false"
        return value.strip().lower() if isinstance(value, str) else value


_RENAMED_SAFETY = {
    "max_destructive_ops": "max_blocked (users and teams cut off) and max_deleted",
    "max_destructive_fraction": "max_blocked_fraction and max_deleted_fraction",
}


class SafetySettings(Section):
    """The brake counts users and teams affected, not API calls; deletions and
    removals (irreversible) have their own, stricter limits."""

    RENAMED: ClassVar[dict[str, str]] = _RENAMED_SAFETY

    max_blocked: int = Field(default=25, ge=0, le=MAX_COUNT)
    max_blocked_fraction: float = Field(default=0.10, ge=0, le=1)
    max_deleted: int = Field(default=10, ge=0, le=MAX_COUNT)
    max_deleted_fraction: float = Field(default=0.05, ge=0, le=1)
    fraction_from_memberships: int = Field(default=100, ge=0, le=100_000_000)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in cls.RENAMED.items():
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
    interval_seconds: float = Field(default=300.0, gt=0, le=MAX_INTERVAL)
    cron: Annotated[str | None, AfterValidator(_check_cron)] = None
    jitter_seconds: float = Field(default=30.0, ge=0, le=MAX_WAIT)
    shutdown_timeout_seconds: float = Field(default=60.0, gt=0, le=MAX_WAIT)
    # While the admin-event tail is healthy it carries every change it can see
    # within seconds; the full reconcile is then the hourly safety net for what
    # produces no admin event (federation imports, hand edits in LiteLLM).
    interval_with_events_seconds: float = Field(default=3600.0, gt=0, le=MAX_INTERVAL)


class EventsSettings(Section):
    """The fast path: Keycloak admin events tailed between full reconciles.

    Events are hints: each names users and groups, which are re-read before
    anything is planned; the full reconcile on ``schedule`` stays the safety net
    for changes Keycloak records no admin event for (federation imports, direct
    database changes).
    """

    enabled: Literal["auto", "true", "false"] = "auto"
    poll_seconds: float = Field(default=1.0, ge=0.2, le=MAX_WAIT)
    # How far back each poll looks past the newest event seen: Keycloak stamps
    # an event before its transaction commits, so one may appear late.
    overlap_seconds: float = Field(default=60.0, ge=0, le=MAX_WAIT)
    # A tail that cannot poll for this long may have missed events: full reconcile.
    max_failure_seconds: float = Field(default=120.0, gt=0, le=MAX_INTERVAL)
    page_size: int = Field(default=200, ge=10, le=1000)
    # Pages one poll may read; more means a burst too big to follow: full reconcile.
    max_pages: int = Field(default=25, ge=1, le=1000)

    @field_validator("enabled", mode="before")
    @classmethod
    def _enabled_words(cls, value: Any) -> Any:
        # YAML reads `true`/`false` as booleans; the setting is a word.
        if isinstance(value, bool):
            return "true" if value else "false"
        return value


class ServerSettings(Section):
    host: str = "0.0.0.0"
    port: int = Field(default=9108, ge=0, le=65535)


class ReadinessSettings(Section):
    max_consecutive_failures: int = Field(default=3, ge=1, le=10_000)
    max_success_age_seconds: float = Field(default=1800.0, gt=0, le=30 * 86400.0)


class PushgatewaySettings(Section):
    url: HttpUrlStr | None = None
    job: str = "syncd"
    timeout_seconds: float = Field(default=5.0, gt=0, le=MAX_TIMEOUT)


class RetrySettings(Section):
    max_attempts: int = Field(default=5, ge=1, le=20)
    initial_backoff_seconds: float = Field(default=0.5, ge=0, le=MAX_WAIT)
    max_backoff_seconds: float = Field(default=30.0, ge=0, le=MAX_WAIT)
    max_retries_per_run: int = Field(default=500, ge=0, le=MAX_COUNT)


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(BaseModel):
    """All of syncd's configuration; see config/syncd.example.yaml for every key.

    Built by `load_settings` (file + environment) or directly from keyword
    arguments (tests); constructing it never reads the environment itself.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    keycloak: KeycloakSettings
    litellm: LiteLLMSettings
    selection: SelectionSettings = SelectionSettings()
    teams: TeamsSettings = TeamsSettings()
    members: MembersSettings = MembersSettings()
    departures: DeparturesSettings = DeparturesSettings()
    users: UsersSettings = UsersSettings()
    safety: SafetySettings = SafetySettings()
    schedule: ScheduleSettings = ScheduleSettings()
    events: EventsSettings = EventsSettings()
    server: ServerSettings = ServerSettings()
    readiness: ReadinessSettings = ReadinessSettings()
    pushgateway: PushgatewaySettings = PushgatewaySettings()
    retries: RetrySettings = RetrySettings()
    logging: LoggingSettings = LoggingSettings()


def _read_capped(path: Path, cap: int) -> bytes:
    """Read at most ``cap`` bytes: the size is checked before anything is parsed, and a
    file that grows (or is not a regular file) cannot make syncd read for ever."""
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size > cap:
            raise ConfigFileTooLarge
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise ConfigFileTooLarge
    return data


def _line_col(text: str | bytes, pos: int) -> str:
    nl = "\n" if isinstance(text, str) else b"\n"
    line = text.count(nl, 0, pos) + 1  # type: ignore[arg-type]
    col = pos - (text.rfind(nl, 0, pos) + 1) + 1  # type: ignore[arg-type]
    return f"line {line}, column {col}"


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error
    (PyYAML silently keeps the last one). Merge keys (``<<: *anchor``) may still be
    overridden by explicit keys: that is what they are for."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable: the base class reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark,
                    context=f"first at line {first.start_mark.line + 1}",
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """PyYAML's messages span several lines with a source excerpt; keep one line."""
    if isinstance(exc, yaml.reader.ReaderError):
        return (f"unacceptable character #x{exc.character:04x} "
                f"at {_line_col(text, exc.position)}: {exc.reason}")
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = exc.problem or exc.context or "syntax error"
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            problem += f" at line {mark.line + 1}, column {mark.column + 1}"
        if exc.problem and exc.context:
            at = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
            problem += f" ({exc.context}{at})"
        return problem
    return " ".join(str(exc).split())


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = _read_capped(path, MAX_CONFIG_BYTES)
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except ConfigFileTooLarge:
        raise ConfigError(f"configuration file {path} is over the 1 MiB limit "
                          f"({MAX_CONFIG_BYTES} bytes); is it the right file?") from None
    try:
        text = raw.decode("utf-8-sig")  # a BOM from a Windows editor is fine
    except UnicodeDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not UTF-8 text (byte "
                          f"0x{raw[exc.start]:02x} at {_line_col(raw, exc.start)}); "
                          "save it as UTF-8") from None
    try:
        loaded = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {path} is not valid YAML: "
                          f"{_yaml_problem(exc, text)}") from None
    except RecursionError:
        raise ConfigError(f"configuration file {path} is not valid YAML: "
                          "nested too deeply") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"configuration file {path}: top level must be a mapping")
    return loaded


def _unwrap(tp: Any) -> Any:
    """The type under ``Annotated[...]`` and ``X | None``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _var(path: Sequence[str]) -> str:
    return ENV_PREFIX + "__".join(path).upper()


def _env_kind(name: str, path: tuple[str, ...]) -> Literal["scalar", "json", "list"]:
    """How the variable's value is read, found by walking the model along its path;
    a path that names no setting is a `ConfigError` with a did-you-mean."""
    model: type[BaseModel] = Settings
    for i, part in enumerate(path):
        fields = model.model_fields
        if part not in fields:
            if part in getattr(model, "RENAMED", {}) and i == len(path) - 1:
                return "scalar"  # the section's validator explains what replaced it
            close = difflib.get_close_matches(part, list(fields), n=1, cutoff=0.6)
            if close:
                hint = f"did you mean {_var((*path[:i], close[0], *path[i + 1:]))}?"
            else:
                hint = f"known {'keys' if i else 'sections'}: {', '.join(fields)}"
            where = f" in section {'.'.join(path[:i])}" if i else ""
            raise ConfigError(f"{name}: unknown setting {part!r}{where}; {hint}")
        tp = _unwrap(fields[part].annotation)
        rest = path[i + 1:]
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if rest:
                model = tp
                continue
            return "json"
        dotted = ".".join(path[: i + 1])
        if rest:
            if get_origin(tp) is dict:
                raise ConfigError(f"{name}: {dotted} is a mapping; set {_var(path[:i + 1])} "
                                  "to a JSON object instead")
            raise ConfigError(f"{name}: unknown setting; {dotted} has no keys below it "
                              f"(did you mean {_var(path[:i + 1])}?)")
        if get_origin(tp) is list:
            return "list" if _unwrap(get_args(tp)[0]) is str else "json"
        return "json" if get_origin(tp) is dict else "scalar"
    raise ConfigError(f"{name}: unknown setting")  # an empty path; not reached


def _decode(name: str, raw: str, kind: str) -> Any:
    """A list of strings may be JSON or comma-separated (``/llm,/ai``): the friendlier
    reading for Kubernetes manifests; sections and mappings must be JSON."""
    if kind == "scalar":
        return raw
    if kind == "list" and not raw.lstrip().startswith("["):
        return [item.strip() for item in raw.split(",") if item.strip()]
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        # exc.msg and the column only: the value may hold a secret
        how = ("give a JSON list or comma-separated values" if kind == "list"
               else f"give JSON, or set the keys one by one as {name}__<KEY>")
        raise ConfigError(f"{name}: not valid JSON ({exc.msg} at column {exc.colno}); "
                          f"{how}") from None
    except RecursionError:
        raise ConfigError(f"{name}: JSON nested too deeply") from None


def _from_environment(
    env: Mapping[str, str],
) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """``SYNCD_<SECTION>__<KEY>`` variables as nested data, and which variable set which
    key path (so validation errors can name the variable). Names are case-insensitive,
    like pydantic-settings'. Every other ``SYNCD_`` variable is an error, unless it is
    one of `NOT_SETTINGS` or a Kubernetes service link."""
    found: list[tuple[tuple[str, ...], str, Any]] = []
    for name, raw in env.items():
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NOT_SETTINGS \
                or _SERVICE_LINK.fullmatch(upper):
            continue
        path = tuple(upper.removeprefix(ENV_PREFIX).lower().split("__"))
        found.append((path, name, _decode(name, raw, _env_kind(name, path))))
    data: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    for path, name, value in sorted(found, key=lambda f: (len(f[0]), f[1])):
        node = data
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name} conflicts with {origins[path[:depth + 1]]}, "
                                  "which is not a JSON object")
            node = child
        node[path[-1]] = _merge(node[path[-1]], value) if isinstance(
            node.get(path[-1]), dict) and isinstance(value, dict) else value
        origins[path] = name
    return data, origins


def _merge(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    out = dict(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_by(data: Any, loc: tuple[str | int, ...], origins: dict[tuple[str, ...], str]
            ) -> str | None:
    """The variable that set the value at ``loc``, if the environment set it."""
    for part in loc:
        in_list = isinstance(data, list) and isinstance(part, int) and part < len(data)
        if not (in_list or (isinstance(data, dict) and part in data)):
            return None
        data = data[part]
    keys = tuple(str(p) for p in loc)
    for n in range(len(keys), 0, -1):
        if keys[:n] in origins:
            return origins[keys[:n]]
    return None


def _format_errors(exc: ValidationError, origin: str, env_data: dict[str, Any],
                   origins: dict[tuple[str, ...], str]) -> str:
    """One line: on-call greps logs and reads `kubectl logs` one line at a time."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = []
    for err in errors[:MAX_ERRORS_SHOWN]:
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        var = _set_by(env_data, err["loc"], origins)
        msg = " ".join(err["msg"].removeprefix("Value error, ").split())
        parts.append(f"{loc}: {msg} (set by {var})" if var else f"{loc}: {msg}")
    more = len(errors) - MAX_ERRORS_SHOWN
    if more > 0:
        parts.append(f"and {more} more")
    return f"invalid configuration ({origin}): " + "; ".join(parts)


def load_settings(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read, merge and validate configuration; raise `ConfigError` (one line, naming
    the key or the variable) for any problem.

    ``path`` defaults to ``$SYNCD_CONFIG``; without either, only the environment
    is used (handy in containers that configure everything through env).
    ``environ`` defaults to ``os.environ``.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    env_data, origins = _from_environment(env)
    data: dict[str, Any] = {}
    origin = "environment"
    if path is not None:
        origin = f"{path} and environment"
        data = _read_file(Path(path))
    try:
        return Settings(**_merge(data, env_data))
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin, env_data, origins)) from None
    except RecursionError:
        raise ConfigError(f"invalid configuration ({origin}): nested too deeply") from None
