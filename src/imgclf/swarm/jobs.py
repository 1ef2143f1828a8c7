"""`make train|validate RUNNER=swarm`: the trainer and the client as one-off jobs on the swarm the
stack runs on (DOCKER_HOST names a manager), scheduled on any node.

    imgclf run --runner swarm train --data /mnt/share/pages [train flags]
    imgclf run --runner swarm validate /mnt/share/check [validate flags]      (SHARDS=N: N jobs)

Paths are the nodes' paths: DATA, DIR, OUTPUT's folder, a local MODULE, CACHE_DIR, LOG_DIR and
VALIDATE are bind-mounted at the same path, so they must be on the shared filesystem, mounted at the
same place on every node (and here, for OUTPUT's merge). The trainer publishes into the stack's
shared models volume (/models in the job), where every replica picks the version up. The client
talks to the balancer over the stack's overlay network; with SHARDS=N it runs N jobs at once, each
`--shard i/N`, and merges their outputs into OUTPUT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imgclf import contract, stack, swarm
from imgclf.settings import SwarmSettings

BALANCER_REST = "http://balancer:8501"   # the balancer's name on the stack's overlay network
BALANCER_GRPC = "balancer:8500"


def _known(argv: list[str], positional: str | None, *flags: str) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(add_help=False)
    if positional:
        parser.add_argument(positional)
    for flag in flags:
        parser.add_argument(flag)
    return parser.parse_known_args(argv)


def train_job(argv: list[str], settings: SwarmSettings) -> swarm.Job:
    known, rest = _known(argv, None, "--data", "--models", "--module", "--cache-dir", "--log-dir", "--validate")
    if not known.data:
        raise swarm.SwarmError("train: --data is required (on the shared filesystem, same path on every node)")
    job = swarm.Job(swarm.job_name(settings, "train"), settings.trainer_image or swarm.default_image("trainer"),
                    ["--data", known.data, "--models", "/models", "--progress", "0"], {known.data: True}, models=True)
    if known.module and known.module.startswith("/"):
        job.binds[known.module] = True
    for flag in ("module", "cache_dir", "log_dir", "validate"):
        value = getattr(known, flag)
        if value:
            job.args += ["--" + flag.replace("_", "-"), value]
            if flag in ("cache_dir", "log_dir"):
                job.binds[value] = False
            elif flag == "validate":
                job.binds[value] = True
    job.args += rest
    return job


def validate_jobs(argv: list[str], settings: SwarmSettings) -> tuple[list[swarm.Job], str]:
    """The client job(s) and OUTPUT (for the merge when sharded)."""
    known, rest = _known(argv, "dir", "--output", "--server", "--grpc-server", "--shard")
    if known.shard and settings.shards > 1:
        raise swarm.SwarmError("give SHARD or SHARDS, not both")
    args = [known.dir, "--server", known.server or BALANCER_REST, "--grpc-server",
            known.grpc_server or BALANCER_GRPC, "--no-progress", *rest]
    binds = {known.dir: True}
    if known.output:
        args += ["--output", known.output]
        binds[str(Path(known.output).parent)] = False
    image = settings.client_image or swarm.default_image("client")
    if settings.shards <= 1:
        return [swarm.Job(swarm.job_name(settings, "validate"), image,
                          args + (["--shard", known.shard] if known.shard else []), binds)], known.output or ""
    return [swarm.Job(f"{swarm.job_name(settings, 'validate')}-{i}", image, args + ["--shard", f"{i}/{settings.shards}"],
                      binds) for i in range(settings.shards)], known.output or ""


def host_path(line: str, settings: SwarmSettings) -> str:
    """A line naming a path under /models (the published version) as this host sees the share."""
    return str(Path(settings.models) / line[len("/models/"):]) if line.startswith("/models/") else line


def run_train(argv: list[str], settings: SwarmSettings, client, say) -> int:
    """Its output (stdout and stderr, as the swarm logged them), the published version's folder
    last, as this host sees the shared folder."""
    code, output = swarm.finish_job(swarm.start_job(client, settings, train_job(argv, settings), say), settings.wait)
    lines = output.rstrip().splitlines()
    published = [line for line in lines if line.startswith("/models/")]
    rest = [line for line in lines if line not in published]
    print("\n".join(rest + [host_path(line, settings) for line in published[-1:]]), flush=True)
    return code


def run_validate(argv: list[str], settings: SwarmSettings, client, say) -> int:
    jobs, output = validate_jobs(argv, settings)
    started = [swarm.start_job(client, settings, job, say) for job in jobs]
    codes = []
    for job, service in zip(jobs, started):
        code, text = swarm.finish_job(service, settings.wait)
        codes.append(code)
        print(f"== {job.name} (exit status {code})\n{text.rstrip()}", flush=True)
    if len(jobs) > 1 and output and all(c in (0, 1) for c in codes):
        from imgclf.client import merge

        return merge.main(["--output", output])
    return max(codes)


def main(target: str, argv: list[str]) -> int:
    """`imgclf run --runner swarm train|validate ...`."""
    settings = swarm.settings_from_environment()
    say = stack.say_to_stderr
    try:
        client = swarm.manager()
        try:
            return (run_train if target == "train" else run_validate)(argv, settings, client, say)
        finally:
            client.close()
    except (swarm.SwarmError, contract.ContractError) as error:
        print(f"imgclf run --runner swarm {target}: {error}", file=sys.stderr)
        return 1
