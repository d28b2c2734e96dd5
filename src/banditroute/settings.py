"""Settings of the routing service, read from a YAML file with environment overrides.

Sources, highest priority first: values passed to ``load_settings`` (the command-line
options), environment variables ``BANDITROUTE_<FIELD>`` (nested fields with ``__``, as
in ``BANDITROUTE_BATCH__MAX_BATCH_SIZE=16``), then the YAML file. The file is the
``config_path`` argument, else ``$BANDITROUTE_CONFIG``, else ``config/service.yaml`` in
the current folder when it exists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from banditroute.catalog import Catalog, ModelSpec, check_model_name
from banditroute.control_state import ControlState, RolloutSetting
from banditroute.encoder import DEFAULT_ENCODER_MODEL, available_cpu_count
from banditroute.errors import ConfigError
from banditroute.events import ControlEvent
from banditroute.features import FeatureSpec
from banditroute.health import HealthSettings
from banditroute.pacing import DEFAULT_LEARNING_RATE, DEFAULT_WARMUP_REQUESTS
from banditroute.policies.thompson import DEFAULT_EXPLORATION
from banditroute.posterior import DEFAULT_PRIOR, PriorSettings
from banditroute.store import store_namespace

CONFIG_ENV_VARIABLE = "BANDITROUTE_CONFIG"
DEFAULT_CONFIG_PATH = Path("config") / "service.yaml"

_config_path: ContextVar[Path | None] = ContextVar("config_path", default=None)


ModelName = Annotated[str, Field(min_length=1), AfterValidator(check_model_name)]
"""A model name as ``check_model_name`` accepts it."""


class CatalogEntry(BaseModel):
    """One routable model and its list prices in USD per million tokens."""

    model_config = ConfigDict(extra="forbid")

    name: ModelName
    input_usd_per_mtok: float = Field(ge=0, allow_inf_nan=False)
    output_usd_per_mtok: float = Field(ge=0, allow_inf_nan=False)

    def to_spec(self) -> ModelSpec:
        return ModelSpec(self.name, self.input_usd_per_mtok, self.output_usd_per_mtok)


class BudgetConfig(BaseModel):
    """A spending target; the cost weight then adapts so that spend meets it."""

    model_config = ConfigDict(extra="forbid")

    target_cost_usd: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Target mean cost per request in USD; None keeps the cost weight fixed."""
    warmup_requests: int = Field(DEFAULT_WARMUP_REQUESTS, ge=0)
    """Requests with a known cost during which the weight keeps its initial value."""
    learning_rate: float = Field(DEFAULT_LEARNING_RATE, gt=0, allow_inf_nan=False)
    """Step of the log weight per request whose cost is one target off."""

    def pacer_options(self) -> dict[str, Any]:
        return {
            "warmup_requests": self.warmup_requests,
            "learning_rate": self.learning_rate,
        }


class HealthConfig(BaseModel):
    """When a failing model is cooled down and probed again (see ``HealthSettings``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    consecutive_errors: int = Field(5, ge=0)
    error_rate: float | None = Field(0.5, gt=0, le=1, allow_inf_nan=False)
    window: int = Field(20, ge=1)
    min_window_requests: int = Field(10, ge=1)
    cooldown_seconds: float = Field(30.0, gt=0, allow_inf_nan=False)
    backoff_factor: float = Field(2.0, ge=1, allow_inf_nan=False)
    max_cooldown_seconds: float = Field(600.0, gt=0, allow_inf_nan=False)
    probe_requests: int = Field(3, ge=1)

    def to_settings(self) -> HealthSettings | None:
        """Return the breaker settings, or None when health checks are off."""
        if not self.enabled:
            return None
        try:
            return HealthSettings(**self.model_dump(exclude={"enabled"}))
        except ConfigError as error:
            raise ConfigError(f"health: {error}") from error


class RolloutConfig(BaseModel):
    """Gradual rollout: the bandit routes ``share`` of requests, the rest go to
    ``default_model``."""

    model_config = ConfigDict(extra="forbid")

    share: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    """Share of requests the bandit routes; None lets it route every request."""
    default_model: str | None = None

    def to_setting(self) -> RolloutSetting | None:
        if self.share is None and self.default_model is None:
            return None
        if self.share is None or self.default_model is None:
            raise ConfigError(
                "rollout needs both share and default_model; set both or neither."
            )
        return RolloutSetting(self.share, self.default_model)


class PriorConfig(BaseModel):
    """The prior of every model's quality regression (see ``PriorSettings``)."""

    model_config = ConfigDict(extra="forbid")

    mean_quality: float = Field(0.5, allow_inf_nan=False)
    bias_precision: float = Field(1.0, gt=0, allow_inf_nan=False)
    weight_precision: float = Field(
        DEFAULT_PRIOR.weight_precision, gt=0, allow_inf_nan=False
    )
    noise_shape: float = Field(2.0, gt=0, allow_inf_nan=False)
    noise_variance: float = Field(0.25, gt=0, allow_inf_nan=False)
    learn_weight_precision: bool = DEFAULT_PRIOR.learn_weight_precision
    """Re-estimate each model's weight precision from its feedback (evidence
    maximization); ``weight_precision`` is then its starting value."""

    def to_prior(self) -> PriorSettings:
        return PriorSettings(**self.model_dump())

    def identity(self) -> dict[str, object]:
        """Return the fields that shape the learned state, for the store namespace.

        ``learn_weight_precision`` enters only when true, so that namespaces of a
        fixed prior stay as they were before the precision could be learned.
        """
        fields = self.model_dump()
        if not fields["learn_weight_precision"]:
            del fields["learn_weight_precision"]
        return fields


class ExplorationConfig(BaseModel):
    """Overrides of how widely Thompson sampling draws each model's quality.

    Neither changes what the posterior learns, only the draws, so neither enters the
    store namespace and processes with other values can share one learned state.
    """

    model_config = ConfigDict(extra="forbid")

    scale: float = Field(DEFAULT_EXPLORATION, gt=0, allow_inf_nan=False)
    """Multiplier on the posterior standard deviation of each sampled quality; 1 is
    exact Thompson sampling."""
    noise_variance: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Noise variance of quality used in the draws instead of the one learned from
    the feedback (quality units squared); None uses the learned one."""


class FeatureConfig(BaseModel):
    """Request metadata keys that enter the context vector (see ``FeatureSpec``)."""

    model_config = ConfigDict(extra="forbid")

    numeric: list[str] = Field(default_factory=list)
    categorical: dict[str, list[str]] = Field(default_factory=dict)

    def to_spec(self) -> FeatureSpec:
        return FeatureSpec(numeric=tuple(self.numeric), categorical=self.categorical)


class BatchConfig(BaseModel):
    """Batching of concurrent prompts into encoder calls."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(32, ge=1)
    """Maximum number of prompts embedded in one encoder call."""
    batch_wait_ms: float = Field(2.0, ge=0, allow_inf_nan=False)
    """Maximum time in ms that a prompt waits for others to join its batch."""


class ServiceSettings(BaseSettings):
    """Every setting of ``banditroute serve`` and of ``create_app``."""

    model_config = SettingsConfigDict(
        env_prefix="BANDITROUTE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    catalog: list[CatalogEntry] = Field(min_length=1)
    cost_weight: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Default quality points a caller gives up to save one USD of expected cost."""
    prior: PriorConfig = Field(default_factory=PriorConfig)
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)
    half_life: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Feedback events (of all models) after which a feedback's weight in the
    posterior halves, for quality that drifts; None keeps all feedback."""
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    admin_key: SecretStr | None = None
    """Bearer token of the /admin endpoints; None turns them off."""

    redis_url: str | None = None
    """Redis URL shared by every server process; None keeps all state in memory."""
    redis_namespace: str = Field("banditroute", min_length=1)
    """Key prefix in Redis; a digest of the encoder, features and prior is appended."""
    redis_timeout_seconds: float = Field(1.0, gt=0, allow_inf_nan=False)

    feedback_window_seconds: float = Field(86_400.0, gt=0, allow_inf_nan=False)
    """Time after a decision during which its feedback is accepted."""
    max_body_bytes: int = Field(65_536, ge=1)
    max_prompt_chars: int = Field(32_000, ge=1)
    snapshot_every: int = Field(10_000, ge=1)
    """Applied events between two stored posterior snapshots."""
    retry_after_seconds: int = Field(2, ge=1)
    """Retry-After of a 503 response to /feedback while Redis is unreachable."""

    encoder_model: str = DEFAULT_ENCODER_MODEL
    batch: BatchConfig = Field(default_factory=BatchConfig)
    torch_threads: int | None = Field(None, ge=1)
    """Torch threads per process; None gives the available CPUs divided by workers."""

    workers: int = Field(1, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65_535)
    seed: int | None = None
    """Seed of each process's Thompson-sampling generator; None seeds from the OS."""

    @field_validator("catalog")
    @classmethod
    def _names_are_unique(cls, entries: list[CatalogEntry]) -> list[CatalogEntry]:
        names = [entry.name for entry in entries]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"models {repeated} are listed more than once")
        return entries

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlFileSource(settings_cls))

    def build_catalog(self) -> Catalog:
        """Return the catalog in the order the settings list it."""
        return Catalog(entry.to_spec() for entry in self.catalog)

    def build_controls(self, catalog: Catalog) -> ControlState:
        """Return the control state of ``catalog`` before any event: no budget, no
        rollout, and the breakers of these settings.

        Every process starts from this state and applies the same events, so they
        agree whatever budget and rollout their own settings files set.
        ``initial_control_events`` brings those into a new stream.
        """
        return ControlState(
            catalog,
            pacer_options=self.budget.pacer_options(),
            health=self.health.to_settings(),
        )

    def initial_control_events(self, issued_at: float) -> list[ControlEvent]:
        """Return the control events that set this file's budget and rollout."""
        events = []
        if self.budget.target_cost_usd is not None:
            arguments = {
                "target_cost_usd": self.budget.target_cost_usd,
                **self.budget.pacer_options(),
            }
            events.append(ControlEvent("set_budget", arguments, issued_at))

        rollout = self.rollout.to_setting()
        if rollout is not None:
            change = {"share": rollout.share, "default_model": rollout.default_model}
            events.append(ControlEvent("set_rollout", change, issued_at))
        return events

    def resolved_torch_threads(self) -> int:
        """Return the torch thread count of one process."""
        if self.torch_threads is not None:
            return self.torch_threads
        return max(1, available_cpu_count() // self.workers)

    def store_namespace(self, feature_dimension: int) -> str:
        """Return the Redis namespace of this encoder, feature spec and prior.

        Processes share learned state only when they agree on all of these, so that
        no process replays events into a posterior that means something else. The
        catalog is left out: the shared state keeps its own, which the settings
        file's new models join when a process starts.
        """
        identity: dict[str, object] = {
            "encoder": self.encoder_model,
            "features": self.features.model_dump(),
            "prior": self.prior.identity(),
        }
        # Added only when set, so that namespaces without forgetting stay as before.
        if self.half_life is not None:
            identity["half_life"] = self.half_life
        return store_namespace(
            feature_dimension,
            settings=json.dumps(identity, sort_keys=True),
            prefix=self.redis_namespace,
        )


class YamlFileSource(PydanticBaseSettingsSource):
    """Settings from the YAML file chosen by ``load_settings`` or the environment."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        # Unused, because __call__ returns the whole file at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = resolve_config_path(_config_path.get())
        if path is None:
            return {}
        return read_config_file(path)


def resolve_config_path(config_path: Path | None) -> Path | None:
    """Return the YAML file to read: the argument, $BANDITROUTE_CONFIG or the default.

    Returns None when neither is given and the default file does not exist.
    """
    if config_path is not None:
        return Path(config_path)

    from_environment = os.environ.get(CONFIG_ENV_VARIABLE)
    if from_environment:
        return Path(from_environment)

    if DEFAULT_CONFIG_PATH.is_file():
        return DEFAULT_CONFIG_PATH
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    """Return the mapping in a YAML settings file; raise ConfigError if unreadable."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"Cannot read the settings file {path}: {error}") from error

    if data is None:
        return {}

    if not isinstance(data, dict):
        raise ConfigError(
            f"The settings file {path} must contain a YAML mapping of setting names "
            f"to values, not a {type(data).__name__}."
        )
    return data


@contextmanager
def _reading_config(path: Path | None) -> Iterator[None]:
    token = _config_path.set(path)
    try:
        yield
    finally:
        _config_path.reset(token)


def load_settings(config_path: Path | None = None, **overrides: Any) -> ServiceSettings:
    """Read the settings; ``overrides`` take priority over the environment and file.

    Raises ConfigError naming every invalid setting.
    """
    path = resolve_config_path(config_path)
    if config_path is not None and not Path(config_path).is_file():
        raise ConfigError(
            f"Settings file {config_path} not found; pass an existing YAML file."
        )

    try:
        with _reading_config(path):
            return ServiceSettings(**overrides)
    except ValidationError as error:
        raise ConfigError(_describe_validation_error(error, path)) from error


def _describe_validation_error(error: ValidationError, path: Path | None) -> str:
    source = f"the settings file {path} or " if path is not None else ""
    problems = []
    for entry in error.errors():
        location = ".".join(str(part) for part in entry["loc"]) or "settings"
        problems.append(f"{location}: {entry['msg']} (got {entry.get('input')!r})")
    return (
        f"Invalid settings in {source}the BANDITROUTE_ environment variables: "
        + "; ".join(problems)
        + ". Fix these values and start again."
    )


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url

    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
