"""Config files read the way tensorflow_model_server reads them: text-format protos.

- --model_config_file: `ModelServerConfig` from the tensorflow-serving-api package.
- --monitoring_config_file: `MonitoringConfig`, --batching_parameters_file: `BatchingParameters`.
  The pip package does not ship these two protos, so their descriptors are declared here with the
  real names and field numbers (tensorflow_serving/config/monitoring_config.proto and
  servables/tensorflow/session_bundle_config.proto) in a private pool; text_format then parses
  exactly the files the real server accepts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf import wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
CONTAINER_MODELS_ROOT = PurePosixPath("/models")   # where the official image expects models


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file."""


# --- model config ------------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionPolicy:
    kind: str = "latest"                 # latest | all | specific
    num_versions: int = 1                # for latest
    versions: tuple[int, ...] = ()       # for specific

    def choose(self, on_disk: list[int]) -> list[int]:
        """The versions to serve among those on disk (ascending)."""
        if self.kind == "all":
            return list(on_disk)
        if self.kind == "specific":
            return [v for v in on_disk if v in self.versions]
        return list(on_disk)[-max(self.num_versions, 1):] if on_disk else []


@dataclass(frozen=True)
class ModelSpecConfig:
    name: str
    base_path: Path
    policy: VersionPolicy = VersionPolicy()
    version_labels: tuple[tuple[str, int], ...] = ()

    @property
    def labels(self) -> dict[str, int]:
        return dict(self.version_labels)


def single_model_config(name: str, base_path: str | os.PathLike) -> ModelSpecConfig:
    """What --model_name/--model_base_path mean: one model, latest version."""
    return ModelSpecConfig(name=name, base_path=Path(base_path).absolute())


def parse_model_server_config(text: str, source: str = "<string>",
                              models_root: str | os.PathLike | None = None) -> list[ModelSpecConfig]:
    """Model specs from a text-format ModelServerConfig.

    Base paths must be absolute, as for the real server. `models_root` maps the container's
    /models onto a host folder so that the one config file works for both servers."""
    message = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ConfigError(f"{source}: not a text-format ModelServerConfig: {error}") from error
    return specs_from_message(message, source, models_root)


def specs_from_message(message: model_server_config_pb2.ModelServerConfig, source: str = "<config>",
                       models_root: str | os.PathLike | None = None) -> list[ModelSpecConfig]:
    if message.WhichOneof("config") == "custom_model_config":
        raise ConfigError(f"{source}: custom_model_config is not supported; use model_config_list")
    specs, names = [], set()
    for config in message.model_config_list.config:
        if config.name in names:
            raise ConfigError(f"{source}: Illegal to list model {config.name} multiple times in config list")
        names.add(config.name)
        if config.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{source}: model {config.name}: model_platform {config.model_platform!r} "
                              "is not supported (only tensorflow)")
        specs.append(ModelSpecConfig(
            name=config.name,
            base_path=_resolve_base_path(config.name, config.base_path, source, models_root),
            policy=_policy(config.model_version_policy),
            version_labels=tuple(sorted(config.version_labels.items())),
        ))
    return specs


def read_model_server_config(path: str | os.PathLike, models_root=None) -> list[ModelSpecConfig]:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read model config file: {error.strerror}") from error
    return parse_model_server_config(text, str(path), models_root)


# --- what the reload RPC may point at -----------------------------------------------------------
def model_roots(specs: list[ModelSpecConfig], models_root=None, extra: str = "") -> list[Path]:
    """Folders under which HandleReloadConfigRequest may place base paths: the folders holding the
    models the server started with, --models, and the comma-separated `extra` (--reload_model_roots)."""
    roots = [Path(spec.base_path).absolute().parent for spec in specs]
    if models_root:
        roots.append(Path(models_root).absolute())
    roots += [Path(part.strip()).absolute() for part in extra.split(",") if part.strip()]
    return sorted({root.resolve() for root in roots})


def check_within_roots(specs: list[ModelSpecConfig], roots: list[Path]) -> None:
    """A remote caller must not point the server at arbitrary host paths: every base path must
    lie under one of `roots` once symbolic links and '..' are resolved (PERMISSION_DENIED)."""
    from imgclf.serving.errors import ServingError

    for spec in specs:
        resolved = Path(spec.base_path).resolve()
        if not any(resolved == root or root in resolved.parents for root in roots):
            raise ServingError(
                "PERMISSION_DENIED",
                f"model {spec.name}: base path {spec.base_path} is outside the model roots this server was "
                f"started with ({', '.join(map(str, roots))}); start it with --reload_model_roots to allow more")


def _resolve_base_path(name: str, base_path: str, source: str, models_root) -> Path:
    if not base_path.startswith("/"):
        raise ConfigError(
            f"{source}: Expected model {name} to have an absolute path or URI; got base_path()={base_path}"
        )
    posix = PurePosixPath(base_path)
    if models_root is not None and (posix == CONTAINER_MODELS_ROOT or CONTAINER_MODELS_ROOT in posix.parents):
        return Path(models_root).absolute() / posix.relative_to(CONTAINER_MODELS_ROOT)
    return Path(base_path)


def _policy(policy) -> VersionPolicy:
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy(kind="all")
    if choice == "specific":
        return VersionPolicy(kind="specific", versions=tuple(policy.specific.versions))
    num = policy.latest.num_versions if choice == "latest" else 1
    return VersionPolicy(kind="latest", num_versions=num or 1)


def format_model_server_config(specs: list[ModelSpecConfig]) -> str:
    """Text-format ModelServerConfig for these specs (used for docs and tests)."""
    message = model_server_config_pb2.ModelServerConfig()
    for spec in specs:
        config = message.model_config_list.config.add()
        config.name, config.base_path, config.model_platform = spec.name, str(spec.base_path), "tensorflow"
        if spec.policy.kind == "all":
            config.model_version_policy.all.SetInParent()
        elif spec.policy.kind == "specific":
            config.model_version_policy.specific.versions.extend(spec.policy.versions)
        else:
            config.model_version_policy.latest.num_versions = spec.policy.num_versions
        for label, version in spec.version_labels:
            config.version_labels[label] = version
    return text_format.MessageToString(message)


# --- monitoring and batching protos ------------------------------------------------------------
def _declare_protos():
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(descriptor_pb2.FileDescriptorProto.FromString(
        wrappers_pb2.DESCRIPTOR.serialized_pb).SerializeToString())
    f = descriptor_pb2.FileDescriptorProto(name="imgclf_serving_declared.proto", package="tensorflow.serving",
                                           syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    T = descriptor_pb2.FieldDescriptorProto

    def message(name, fields):
        m = f.message_type.add(name=name)
        for number, (field_name, kind, type_name, repeated) in enumerate(fields, start=1):
            if field_name is None:
                continue
            m.field.add(name=field_name, number=number, type=kind, type_name=type_name,
                        label=T.LABEL_REPEATED if repeated else T.LABEL_OPTIONAL)
        return m

    message("PrometheusConfig", [("enable", T.TYPE_BOOL, None, False), ("path", T.TYPE_STRING, None, False)])
    message("MonitoringConfig", [("prometheus_config", T.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig", False)])
    int64, string, boolean = ".google.protobuf.Int64Value", ".google.protobuf.StringValue", ".google.protobuf.BoolValue"
    message("BatchingParameters", [
        ("max_batch_size", T.TYPE_MESSAGE, int64, False),
        ("batch_timeout_micros", T.TYPE_MESSAGE, int64, False),
        ("max_enqueued_batches", T.TYPE_MESSAGE, int64, False),
        ("num_batch_threads", T.TYPE_MESSAGE, int64, False),
        ("thread_pool_name", T.TYPE_MESSAGE, string, False),
        ("allowed_batch_sizes", T.TYPE_INT64, None, True),
        ("pad_variable_length_inputs", T.TYPE_BOOL, None, False),
        ("enable_large_batch_splitting", T.TYPE_MESSAGE, boolean, False),
        ("max_execution_batch_size", T.TYPE_MESSAGE, int64, False),
    ])
    pool.Add(f)
    classes = message_factory.GetMessages([f], pool=pool)
    return classes["tensorflow.serving.MonitoringConfig"], classes["tensorflow.serving.BatchingParameters"]


MonitoringConfig, BatchingParameters = _declare_protos()


@dataclass(frozen=True)
class PrometheusSettings:
    enabled: bool = False
    path: str = DEFAULT_PROMETHEUS_PATH


def read_monitoring_config(path: str | os.PathLike | None) -> PrometheusSettings:
    if not path:
        return PrometheusSettings()
    message = _read_text_proto(path, MonitoringConfig(), "MonitoringConfig")
    prometheus = message.prometheus_config
    return PrometheusSettings(enabled=prometheus.enable, path=prometheus.path or DEFAULT_PROMETHEUS_PATH)


@dataclass(frozen=True)
class BatchingSettings:
    """TF Serving's defaults for a batching session (batching_session.h / server defaults)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()


def read_batching_parameters(path: str | os.PathLike | None) -> BatchingSettings:
    if not path:
        return BatchingSettings()
    message = _read_text_proto(path, BatchingParameters(), "BatchingParameters")
    defaults = BatchingSettings()

    def value(name):
        return getattr(message, name).value if message.HasField(name) else getattr(defaults, name)

    return BatchingSettings(
        max_batch_size=value("max_batch_size"),
        batch_timeout_micros=value("batch_timeout_micros"),
        max_enqueued_batches=value("max_enqueued_batches"),
        num_batch_threads=value("num_batch_threads"),
        allowed_batch_sizes=tuple(message.allowed_batch_sizes),
    )


def read_session_config(path: str | os.PathLike | None):
    """--tensorflow_session_config_file: a text-format ConfigProto every version's session gets, as
    the real server reads it into SessionBundleConfig.session_config (server.cc); an empty path is
    TensorFlow's default config."""
    from tensorflow.core.protobuf import config_pb2

    if not path:
        return config_pb2.ConfigProto()
    return _read_text_proto(path, config_pb2.ConfigProto(), "ConfigProto")


def _read_text_proto(path, message, kind: str):
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read {kind} file: {error.strerror}") from error
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ConfigError(f"{path}: not a text-format {kind}: {error}") from error
