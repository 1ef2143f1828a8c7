"""What both transports (REST, gRPC) return and raise, so the validation run does not care which
one it talks through."""

from __future__ import annotations

from dataclasses import dataclass

from imgclf import contract, model_status
from imgclf.model_status import ModelStatus  # noqa: F401  (part of this module's interface)
from imgclf.polling import poll


POLL_SECONDS = 0.5     # while waiting for the model to become AVAILABLE


class ClientError(Exception):
    """A failure with a message meant for the user (printed without a traceback)."""


class ServerUnreachable(ClientError, model_status.ServerUnreachable):
    """No connection, or the server stayed UNAVAILABLE after every retry: the run cannot go on."""


class ModelNotAvailable(ClientError, model_status.ModelNotAvailable):
    """The server answers but has no AVAILABLE version of the model (or version/label) asked for."""


class ContractMismatch(ClientError):
    """The served model or its replies do not follow the serving contract (contract.py)."""


class RequestRejected(ClientError):
    """The server refused this request (HTTP 4xx/5xx other than 404/503; gRPC INVALID_ARGUMENT...):
    typically a file that is not a decodable image. The message is the server's own."""


class RequestTimedOut(ClientError):
    """No reply within the per-request timeout, after the retries."""


@dataclass(frozen=True)
class Prediction:
    classes: tuple[str, ...]
    scores: tuple[float, ...]

    def ranked(self) -> list[tuple[str, float]]:
        """(label, score) pairs, best first."""
        return sorted(zip(self.classes, self.scores), key=lambda pair: -pair[1])

    @property
    def top(self) -> tuple[str, float]:
        return self.ranked()[0]


@dataclass
class PredictReply:
    predictions: list[Prediction]
    version: int | None = None      # the version that answered, when the protocol says (gRPC does)
    request_bytes: int = 0          # size of the request on the wire (body / serialized message)


def check_signature(inputs: set[str], outputs: set[str], where: str) -> None:
    """The served signature must take contract.INPUT_NAME and give the scores and classes outputs."""
    wanted_outputs = {contract.SCORES_OUTPUT, contract.CLASSES_OUTPUT}
    if contract.INPUT_NAME not in inputs or not wanted_outputs <= outputs:
        raise ContractMismatch(
            f"{where}: signature {contract.SIGNATURE_NAME!r} takes {sorted(inputs)} and gives "
            f"{sorted(outputs)}; this client needs input {contract.INPUT_NAME!r} and outputs "
            f"{sorted(wanted_outputs)} (a model exported by `imgclf train`)"
        )


def make_predictions(scores: list, classes: list, expected: int, where: str) -> list[Prediction]:
    """Pairs each row of scores with its row of class names, checking the reply has one per image."""
    if len(scores) != expected or len(classes) != expected:
        raise ContractMismatch(
            f"{where}: sent {expected} images, got {len(scores)} score rows and {len(classes)} class rows"
        )
    predictions = []
    for row_scores, row_classes in zip(scores, classes):
        if len(row_scores) != len(row_classes) or not row_scores:
            raise ContractMismatch(f"{where}: {len(row_scores)} scores for {len(row_classes)} classes")
        predictions.append(Prediction(tuple(row_classes), tuple(float(s) for s in row_scores)))
    return predictions


def wait_until_available(client, wait_seconds: float, on_wait=None) -> int:
    """Polls client.status() until a version is AVAILABLE; returns the highest such version.

    The real server opens its ports only once the first versions have loaded, so an unreachable
    server counts as still loading until the deadline. on_wait(reason) is called once, when the
    first poll finds the model not ready."""
    problems: list[ClientError] = []

    def newest_available() -> int | None:
        try:
            status = client.status()
            if status.available:
                return status.available[-1]
            problem: ClientError = ModelNotAvailable(f"{client.endpoint}: {status.describe()}")
        except (ServerUnreachable, ModelNotAvailable, RequestTimedOut) as error:
            problem = error
        if on_wait and not problems and wait_seconds > 0:
            on_wait(str(problem))
        problems.append(problem)
        return None

    version = poll(newest_available, wait_seconds, POLL_SECONDS)
    if version is None:
        problem = problems[-1]
        if wait_seconds > 0:
            problem.args = (f"{problem.args[0]} (waited {wait_seconds:g} s)",)
        raise problem
    return version


@dataclass
class ImageResult:
    """One file's outcome: a prediction, or the reason it has none (the server's message)."""

    path: str
    folder: str | None                 # the class folder it sits in (its true label, if one)
    prediction: Prediction | None = None
    error: str | None = None
    version: int | None = None
    file_bytes: int = 0
