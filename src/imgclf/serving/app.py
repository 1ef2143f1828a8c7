"""The local model server put together from its flags: model config, version manager, REST and
gRPC endpoints, metrics. Ports open only after the first versions loaded, as the real server."""

from __future__ import annotations

import argparse
import logging
import os
import resource
import threading
from pathlib import Path

from imgclf.serving import config as config_files
from imgclf.serving.config import ConfigError, ModelSpecConfig
from imgclf.serving.errors import ServingError
from imgclf.serving.flags import server_limits
from imgclf.serving.metrics import ServingMetrics
from imgclf.serving.server import ModelGate, ModelServer, VersionLoader
from imgclf.serving.session import start_thread_pools
from imgclf.serving.standby import StandbySessions
from imgclf.serving.versions import ServerCore

FILES_KEPT_FOR_MODELS = 512      # open files left for models, logs and gRPC beside REST connections

log = logging.getLogger("imgclf.serve")


class StartupError(RuntimeError):
    """The server cannot start; the message says why (file, flag, port or failed version)."""


def version_text() -> str:
    import tensorflow as tf

    from imgclf import __version__ as imgclf_version

    return f"TensorFlow ModelServer: imgclf-{imgclf_version} (local compatible server)\nTensorFlow Library: {tf.__version__}"


def initial_model_specs(args: argparse.Namespace) -> list[ModelSpecConfig]:
    if args.model_config_file:
        return config_files.read_model_server_config(args.model_config_file, models_root=args.models)
    base_path = args.model_base_path
    if not base_path and args.models:
        base_path = str(Path(args.models) / args.model_name)
    if not base_path:
        raise ConfigError("Both server_options.model_base_path and server_options.model_config_file are empty!")
    return [config_files.single_model_config(args.model_name, base_path)]


def thread_counts(args: argparse.Namespace) -> tuple[int, int]:
    """(intra, inter) as the real server.cc picks them: --tensorflow_{intra,inter}_op_parallelism when
    either is set, else --tensorflow_session_parallelism for both (0 = TensorFlow's choice)."""
    intra, inter, both = (args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism,
                          args.tensorflow_session_parallelism)
    if intra > 0 and inter > 0 and both > 0:
        raise ConfigError("Either configure --tensorflow_session_parallelism or (--tensorflow_intra_op_parallelism, "
                          "--tensorflow_inter_op_parallelism) separately. You cannot configure all.")
    if intra > 0 or inter > 0:
        return intra, inter
    return both, both


def session_config(args: argparse.Namespace):
    """The ConfigProto of every version's session (the real server's SessionBundleConfig.session_config):
    --tensorflow_session_config_file, then the thread flags over it, as server.cc does."""
    config = config_files.read_session_config(args.tensorflow_session_config_file)
    config.intra_op_parallelism_threads, config.inter_op_parallelism_threads = thread_counts(args)
    return config


def apply_thread_flags(args: argparse.Namespace) -> None:
    """The same thread counts for the eager runtime (which reads the warmup files)."""
    import tensorflow as tf

    intra, inter = thread_counts(args)
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit (each connection is a file); returns
    (before, after). Where the hard limit cannot be read or set, both are the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, hard


def connection_cap(wanted: int, open_files: int) -> int:
    """--rest_api_max_connections, lowered so that connections never take the files the models need."""
    if open_files == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, open_files - min(FILES_KEPT_FOR_MODELS, open_files // 2)))


class LocalModelServer:
    def __init__(self, args: argparse.Namespace, specs: list[ModelSpecConfig]):
        self.args = args
        self.limits = server_limits(args)
        self.reload_roots = config_files.model_roots(specs, args.models, self.limits.reload_model_roots)
        batching = (config_files.read_batching_parameters(args.batching_parameters_file)
                    if args.enable_batching else None)
        self.prometheus = config_files.read_monitoring_config(args.monitoring_config_file)
        self.metrics = ServingMetrics() if self.prometheus.enabled else None
        tags = tuple(t for t in args.saved_model_tags.split(",") if t)
        self.session_config = session_config(args)
        self.loader = VersionLoader(batching, enable_warmup=args.enable_model_warmup, tags=tags,
                                    run_batch_size=self.limits.model_run_batch_size,
                                    session_config=self.session_config, load_nice=self.limits.model_load_nice,
                                    standby=StandbySessions(self.limits.model_standby_sessions))
        self.core = ServerCore(specs, self.loader, poll_seconds=args.file_system_poll_wait_seconds,
                               reload_config=self._read_config_file if args.model_config_file else None,
                               config_poll_seconds=args.model_config_file_poll_wait_seconds)
        concurrent = self.limits.model_max_concurrent_requests or os.cpu_count() or 1
        self.model_server = ModelServer(self.core, self.metrics, timeout_seconds=args.rest_api_timeout_in_ms / 1000,
                                        max_instances=self.limits.max_instances_per_request,
                                        gate=ModelGate(concurrent, self.limits.model_max_queued_requests))
        self._http = None
        self._grpc = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "LocalModelServer":
        if args.port and args.port == args.rest_api_port:
            raise StartupError(f"--port and --rest_api_port must differ (both {args.port})")
        try:
            return cls(args, initial_model_specs(args))
        except ConfigError as error:
            raise StartupError(str(error)) from error

    def start(self) -> None:
        apply_thread_flags(self.args)
        before, after = raise_open_file_limit()
        if after != before:
            log.info("Raised the open-file limit from %d to %d (the hard limit)", before, after)
        start_thread_pools(self.session_config)   # at the server's priority, before any load
        self._load_first_versions()
        self.core.start()
        if self.args.port:
            self._start_grpc()
        if self.args.rest_api_port:
            self._start_rest(after)

    def _start_grpc(self) -> None:
        from imgclf.serving.grpc_service import channel_options, make_grpc_server

        host, port = self.args.host, self.args.port
        try:
            options = channel_options(self.limits.grpc_max_receive_message_bytes, self.args.grpc_channel_arguments)
            self._grpc = make_grpc_server(self.model_server, host, port, self.args.grpc_max_threads,
                                          reload_config=self._reload_from_proto, options=options,
                                          max_concurrent_rpcs=self.limits.grpc_max_concurrent_rpcs)
        except (ValueError, ServingError) as error:
            raise StartupError(str(error)) from error
        self._grpc.start()
        log.info("Running gRPC ModelServer at %s:%d ...", host, port)

    def _start_rest(self, open_files: int) -> None:
        from imgclf.serving.http_server import HttpLimits, RestHttpServer
        from imgclf.serving.rest import RestApi

        host, port, limits = self.args.host, self.args.rest_api_port, self.limits
        cap = connection_cap(limits.rest_api_max_connections, open_files)
        if cap < limits.rest_api_max_connections:
            log.warning("Serving at most %d REST connections at once: the open-file limit is %d", cap, open_files)
        http_limits = HttpLimits(
            num_threads=max(1, self.args.rest_api_num_threads), max_connections=cap,
            idle_timeout_seconds=limits.rest_api_idle_timeout_in_ms / 1000,
            body_timeout_seconds=limits.rest_api_body_timeout_in_ms / 1000,
            max_body_bytes=limits.rest_api_max_body_bytes, max_buffered_bytes=limits.rest_api_max_buffered_bytes)
        api = RestApi(self.model_server, self.prometheus.path if self.prometheus.enabled else None)
        try:
            self._http = RestHttpServer(api, host, port, http_limits, cors=self.args.rest_api_enable_cors_support,
                                        gate=self.model_server.gate)
        except OSError as error:
            raise StartupError(f"cannot listen for REST on {host}:{port}: {error}") from error
        self._http.start()
        log.info("Exporting HTTP/REST API at:%s:%d ...", host, port)

    def _load_first_versions(self) -> None:
        """Wait until every model has had its versions tried, as ServerCore does before the ports
        open. With no version on disk yet, keep polling (the real server waits too)."""
        stop = threading.Event()
        while True:
            self.core.load_initial()
            pending = [n for n in self.core.model_names() if not self.core.model(n).states()]
            if not pending:
                break
            if stop.wait(max(self.args.file_system_poll_wait_seconds, 0.2)):
                break
        for name in self.core.model_names():
            model = self.core.model(name)
            if not model.serving_versions():
                failures = "; ".join(f"version {v}: {s.error_code}: {s.error_message}"
                                     for v, s in sorted(model.states().items()) if s.error_message)
                raise StartupError(f"model {name} at {model.spec.base_path}: no version could be loaded ({failures})")
        for name in self.core.model_names():
            try:
                self.loader.prepare_standby(self.core.resolve(name))
            except Exception as error:   # the server runs without: its next version loads anew
                log.warning("Model %s: no standby session (%s)", name, error)

    def _read_config_file(self) -> list[ModelSpecConfig]:
        return config_files.read_model_server_config(self.args.model_config_file, models_root=self.args.models)

    def _reload_from_proto(self, message) -> None:
        """HandleReloadConfigRequest. Refused, beyond what the real server refuses: base paths outside
        the model roots (a remote caller could otherwise serve any SavedModel on the host, whose graph
        may read host files), and a list without any model, which would unload every model."""
        specs = config_files.specs_from_message(message, "HandleReloadConfigRequest", models_root=self.args.models)
        if not specs:
            raise ServingError("FAILED_PRECONDITION",
                               "The config lists no model: it would unload every model this server serves. "
                               "Refused; list the models to keep serving (or stop the server)")
        config_files.check_within_roots(specs, self.reload_roots)
        self.core.apply_config(specs)

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()
        if self._grpc is not None:
            self._grpc.stop(grace=2).wait()
        self.core.stop()
