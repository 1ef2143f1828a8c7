"""tensorflow_model_server's command-line flags, with the same names, meanings and defaults
(tensorflow_serving/model_servers/main.cc and server.h), so one set of flags works for both
servers. Flags the local server cannot honour are accepted and documented as no-ops."""

from __future__ import annotations

import argparse
import dataclasses
import os

from imgclf.settings import ServerLimits, parse_bool

# (name, type, default, help). Types: int, float, str, bool.
MODEL_SERVER_FLAGS = [
    ("port", int, 8500, "TCP port to listen on for gRPC API. Disabled if port set to zero."),
    ("grpc_socket_path", str, "", "(accepted, not supported locally) UNIX socket for gRPC"),
    ("rest_api_port", int, 0, "Port to listen on for HTTP/REST API. If set to zero HTTP/REST API will not be "
                              "exported. This port must be different than the one specified in --port."),
    ("rest_api_num_threads", int, 4 * (os.cpu_count() or 1), "Number of threads for HTTP/REST API processing "
                                                            "(locally: model requests; status and metadata "
                                                            "have two threads of their own)."),
    ("rest_api_timeout_in_ms", int, 30000, "Timeout for HTTP/REST API calls."),
    ("rest_api_enable_cors_support", bool, False, "Enable CORS headers in response"),
    ("enable_batching", bool, False, "enable batching"),
    ("allow_version_labels_for_unavailable_models", bool, False,
     "(accepted, no-op) allow assigning unused version labels to models that are not available yet."),
    ("batching_parameters_file", str, "", "If non-empty, read an ascii BatchingParameters protobuf from the "
                                          "supplied file name and use the contained values instead of the defaults."),
    ("enable_per_model_batching_parameters", bool, False, "(accepted, no-op)"),
    ("model_config_file", str, "", "If non-empty, read an ascii ModelServerConfig protobuf from the supplied file "
                                   "name, and serve the models in that file. (If used, --model_name, "
                                   "--model_base_path are ignored.)"),
    ("model_config_file_poll_wait_seconds", float, 0, "Interval in seconds between each poll of the filesystem for "
                                                    "model_config_file. If unset or set to zero, poll will be done "
                                                    "exactly once and not periodically."),
    ("model_name", str, "default", "name of model (ignored if --model_config_file flag is set)"),
    ("model_base_path", str, "", "path to export (ignored if --model_config_file flag is set, otherwise required)"),
    ("num_load_threads", int, 0, "(accepted, no-op) versions load one at a time per model"),
    ("num_unload_threads", int, 0, "(accepted, no-op)"),
    ("max_num_load_retries", int, 5, "(accepted; the local server reports END with the error at once)"),
    ("load_retry_interval_micros", int, 60 * 1000 * 1000, "(accepted, no-op)"),
    ("file_system_poll_wait_seconds", float, 1, "Interval in seconds between each poll of the filesystem for new "
                                                "model version. If set to zero poll will be exactly done once and "
                                                "not periodically."),
    ("flush_filesystem_caches", bool, True, "(accepted, no-op)"),
    ("tensorflow_session_parallelism", int, 0, "Number of threads to use for running a Tensorflow session."),
    ("tensorflow_session_config_file", str, "", "If non-empty, read an ascii TensorFlow Session ConfigProto "
                                                "protobuf from the supplied file name. Note, parts of the session "
                                                "config (threads, parallelism etc.) can be overridden if needed, "
                                                "via corresponding command line flags."),
    ("tensorflow_intra_op_parallelism", int, 0, "Threads to parallelize the execution of an individual op."),
    ("tensorflow_inter_op_parallelism", int, 0, "Operators that can be executed simultaneously."),
    ("use_alts_credentials", bool, False, "(accepted, not supported locally)"),
    ("ssl_config_file", str, "", "(accepted, not supported locally)"),
    ("platform_config_file", str, "", "(accepted, not supported locally)"),
    ("per_process_gpu_memory_fraction", float, 0.0, "(accepted, no-op)"),
    ("saved_model_tags", str, "serve", "Comma-separated set of tags corresponding to the meta graph def to load "
                                       "from SavedModel."),
    ("grpc_channel_arguments", str, "", "A comma separated list of arguments to be passed to the grpc server. "
                                        "(e.g. grpc.max_connection_age_ms=2000)"),
    ("grpc_max_threads", int, 4 * (os.cpu_count() or 1), "Max grpc server threads to handle grpc messages."),
    ("enable_model_warmup", bool, True, "Enables model warmup, which triggers lazy initializations (such as TF "
                                        "optimizations) at load time, to reduce first request latency."),
    ("num_request_iterations_for_warmup", int, 0, "(accepted; each warmup record is replayed once)"),
    ("version", bool, False, "Display version"),
    ("monitoring_config_file", str, "", "If non-empty, read an ascii MonitoringConfig protobuf from the supplied "
                                        "file name"),
    ("remove_unused_fields_from_bundle_metagraph", bool, True, "(accepted, no-op)"),
    ("prefer_tflite_model", bool, False, "(accepted, no-op)"),
    ("num_tflite_pools", int, os.cpu_count() or 1, "(accepted, no-op)"),
    ("num_tflite_interpreters_per_pool", int, 1, "(accepted, no-op)"),
    ("enable_signature_method_name_check", bool, False, "Enable method_name check for SignatureDef."),
    ("xla_cpu_compilation_enabled", bool, False, "(accepted, no-op)"),
    ("xla_gpu_compilation_enabled", bool, False, "(accepted, no-op)"),
    ("enable_profiler", bool, True, "(accepted, no-op)"),
    ("thread_pool_factory_config_file", str, "", "(accepted, no-op)"),
    ("mixed_precision", str, "", "(accepted, no-op)"),
    ("skip_initialize_tpu", bool, False, "(accepted, no-op)"),
    ("enable_grpc_healthcheck_service", bool, False, "(accepted, no-op)"),
    ("enable_serialization_as_tensor_content", bool, False, "(accepted; outputs are always tensor content)"),
]


LIMIT_HELP = {
    "rest_api_max_connections": "REST connections held at once; when full, the one idle longest (or sending "
                                "its body longest) is closed to make room. Capped by the open-file limit.",
    "rest_api_idle_timeout_in_ms": "Time a REST client may take to send its request headers, and that a "
                                   "keep-alive connection may stay idle.",
    "rest_api_body_timeout_in_ms": "Time a REST client may take to send a request body.",
    "rest_api_max_body_bytes": "Largest REST request body; larger ones get 413.",
    "rest_api_max_buffered_bytes": "REST request bodies held in memory at once; past it, 503.",
    "max_instances_per_request": "Most examples in one request (REST instances, gRPC first dimension); "
                                 "more get INVALID_ARGUMENT. 0 = no limit.",
    "model_max_concurrent_requests": "Requests running a model at once (REST and gRPC); 0 = one per CPU.",
    "model_run_batch_size": "Most examples one model call runs; a larger request whose signature is "
                            "batch-major runs in slices of this size (bounds memory). 0 = whole requests.",
    "model_max_queued_requests": "Requests waiting for the model beyond those; more get UNAVAILABLE (503).",
    "grpc_max_receive_message_bytes": "Largest gRPC message received (--grpc_channel_arguments may override).",
    "grpc_max_concurrent_rpcs": "gRPC calls running or waiting for a thread; more get RESOURCE_EXHAUSTED.",
    "reload_model_roots": "Extra folders (comma-separated) that HandleReloadConfigRequest may point base "
                          "paths into, beside the folders holding the models the server started with; "
                          "'/' allows any path.",
    "model_load_nice": "How much nicer than the threads serving requests TensorFlow loads a new version and "
                       "replays its warmup (Linux; threads of their own): while the cores are busy, requests "
                       "get them first and the version takes longer to come in. 0 = the same priority.",
    "model_standby_sessions": "Per model, sessions kept warm for its next version: a version with the same "
                              "program as one served before (a retrain: same graph, other variables) gets "
                              "its variables restored into one instead of a new session (swaps several "
                              "times cheaper; memory of one more version). 0 = every version in a new "
                              "session, as tensorflow_model_server.",
}


def add_model_server_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tensorflow_model_server flags (same names, meanings and defaults)")
    for name, kind, default, help_text in MODEL_SERVER_FLAGS:
        _add(group, name, kind, default, help_text)
    limits = parser.add_argument_group("limits of the local server (not flags of tensorflow_model_server; "
                                       "defaults in settings.ServerLimits)")
    defaults = ServerLimits()
    for field in dataclasses.fields(ServerLimits):
        default = getattr(defaults, field.name)
        _add(limits, field.name, type(default), default, LIMIT_HELP[field.name])


def _add(group, name: str, kind, default, help_text: str) -> None:
    if kind is bool:
        group.add_argument(f"--{name}", type=parse_bool, nargs="?", const=True, default=default,
                           metavar="BOOL", help=f"{help_text} (default: {str(default).lower()})")
    else:
        group.add_argument(f"--{name}", type=kind, default=default, help=f"{help_text} (default: {default!r})")


def server_limits(args: argparse.Namespace) -> ServerLimits:
    return ServerLimits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServerLimits)})
