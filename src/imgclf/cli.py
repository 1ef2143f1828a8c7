"""The one console script, `imgclf <command> ...`. Each command lives in its own package and is
imported only when used, so `imgclf validate` over REST never imports TensorFlow."""

from __future__ import annotations

import importlib
import sys

from imgclf.tf_logging import quiet_tensorflow_logs

COMMANDS = {
    "train": ("imgclf.rollout.training", "train a classifier on class folders, gate and publish a version"),
    "serve": ("imgclf.serve", "run the local TensorFlow-Serving-compatible server (or compose serving)"),
    "validate": ("imgclf.client.cli", "send a folder of images to the server and report"),
    "pages": ("imgclf.pdf.cli", "render page 1 of every PDF in a folder, as the original tool did"),
    "merge-results": ("imgclf.client.merge", "merge the outputs of validate --shard i/N into one"),
    "demo": ("imgclf.demo", "sample data, train, serve, validate: the whole loop offline"),
    "publish": ("imgclf.rollout.cli", "gate a staged model and publish it as the next version"),
    "rollback": ("imgclf.rollout.cli", "take the highest version out of service"),
    "pin": ("imgclf.rollout.cli", "serve one version (stable/canary labels)"),
    "unpin": ("imgclf.rollout.cli", "go back to serving the highest version"),
    "status": ("imgclf.rollout.cli", "versions on disk and what the server says of them"),
    "clean-staged": ("imgclf.rollout.cli", "remove staged folders left by killed or refused runs"),
    "drill": ("imgclf.rollout.drill", "publish and roll back under load; count failures"),
    "pages-bench": ("imgclf.pages_bench", "how close each PDF renderer comes to the original's JPGs"),
    "evaluate": ("imgclf.evaluate", "how `train` does on sources or styles it never saw (held-out groups)"),
    "bench": ("imgclf.bench", "measure bytes, throughput, training speed-up, rollout, memory"),
    "abuse": ("imgclf.abuse", "a good client's latency while the local server is under attack"),
    "e2e": ("imgclf.e2e", "the Docker Compose stack end to end on a Docker engine"),
    "run": ("imgclf.runner", "train or validate through Docker Compose, or locally (RUNNER)"),
    "swarm-deploy": ("imgclf.swarm", "deploy the serving stack on a Docker Swarm (DOCKER_HOST: a manager)"),
    "swarm-status": ("imgclf.swarm", "every replica on the swarm: node, task state, the version it serves"),
    "swarm-down": ("imgclf.swarm", "remove the serving stack and its balancer from the swarm"),
    "swarm-e2e": ("imgclf.swarm.e2e", "deploy/swarm on a real multi-node swarm, under traffic"),
    "k8s-check": ("imgclf.kube", "render the Kubernetes manifests and check them offline"),
}


# What imgclf.swarm adds to commands of layers below it (which must not import it), composed here at
# the top: `imgclf status` also shows every replica of the serving stack when DOCKER_HOST is a swarm
# manager running it; `imgclf run --runner swarm` runs train or validate as swarm jobs.
def _with_swarm_view() -> None:
    from imgclf import swarm
    from imgclf.rollout import cli as rollout_cli

    rollout_cli.STATUS_VIEWS.append(swarm.status_view)


def _with_swarm_runner() -> None:
    from imgclf import runner
    from imgclf.swarm import jobs

    runner.EXTRA_RUNNERS["swarm"] = jobs.main


COMPOSED = {"status": _with_swarm_view, "run": _with_swarm_runner}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: imgclf <command> [options]   (imgclf <command> --help for its options)", ""]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"imgclf: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    quiet_tensorflow_logs()   # before any command imports TensorFlow
    if command in COMPOSED:
        COMPOSED[command]()
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest, command=command) or 0)


if __name__ == "__main__":
    sys.exit(main())
