"""The local model server put together from its flags: model config, version manager, REST and
gRPC endpoints, metrics. Ports open only after the first versions loaded, as the real server."""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path

from imgclf.serving import config as config_files
from imgclf.serving.config import ConfigError, ModelSpecConfig
from imgclf.serving.metrics import ServingMetrics
from imgclf.serving.server import ModelServer, make_loader
from imgclf.serving.versions import ServerCore

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


def apply_thread_flags(args: argparse.Namespace) -> None:
    """--tensorflow_session_parallelism / --tensorflow_{intra,inter}_op_parallelism (0 = auto)."""
    import tensorflow as tf

    intra = args.tensorflow_intra_op_parallelism or args.tensorflow_session_parallelism
    inter = args.tensorflow_inter_op_parallelism or args.tensorflow_session_parallelism
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)


class LocalModelServer:
    def __init__(self, args: argparse.Namespace, specs: list[ModelSpecConfig]):
        self.args = args
        batching = (config_files.read_batching_parameters(args.batching_parameters_file)
                    if args.enable_batching else None)
        self.prometheus = config_files.read_monitoring_config(args.monitoring_config_file)
        self.metrics = ServingMetrics() if self.prometheus.enabled else None
        tags = tuple(t for t in args.saved_model_tags.split(",") if t)
        loader = make_loader(batching, enable_warmup=args.enable_model_warmup, tags=tags)
        self.core = ServerCore(specs, loader, poll_seconds=args.file_system_poll_wait_seconds,
                               reload_config=self._read_config_file if args.model_config_file else None,
                               config_poll_seconds=args.model_config_file_poll_wait_seconds)
        self.model_server = ModelServer(self.core, self.metrics, timeout_seconds=args.rest_api_timeout_in_ms / 1000)
        self._httpd = None
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
        self._load_first_versions()
        self.core.start()
        host = self.args.host
        if self.args.port:
            from imgclf.serving.grpc_service import make_grpc_server

            self._grpc = make_grpc_server(self.model_server, host, self.args.port, self.args.grpc_max_threads,
                                          reload_config=self._reload_from_proto)
            self._grpc.start()
            log.info("Running gRPC ModelServer at %s:%d ...", host, self.args.port)
        if self.args.rest_api_port:
            from imgclf.serving.rest import RestApi, make_http_server, serve_in_thread

            api = RestApi(self.model_server, self.prometheus.path if self.prometheus.enabled else None)
            try:
                self._httpd = make_http_server(api, host, self.args.rest_api_port,
                                               cors=self.args.rest_api_enable_cors_support)
            except OSError as error:
                raise StartupError(f"cannot listen for REST on {host}:{self.args.rest_api_port}: {error}") from error
            serve_in_thread(self._httpd)
            log.info("Exporting HTTP/REST API at:%s:%d ...", host, self.args.rest_api_port)

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

    def _read_config_file(self) -> list[ModelSpecConfig]:
        return config_files.read_model_server_config(self.args.model_config_file, models_root=self.args.models)

    def _reload_from_proto(self, message) -> None:
        self.core.apply_config(config_files.specs_from_message(message, "HandleReloadConfigRequest",
                                                                models_root=self.args.models))

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._grpc is not None:
            self._grpc.stop(grace=2).wait()
        self.core.stop()
