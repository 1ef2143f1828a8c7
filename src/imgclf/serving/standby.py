"""Sessions kept warm for the next version of a model (--model_standby_sessions).

Loading a version into a new session (graph import, Grappler, executors, the first run's
allocations) costs several times what restoring its checkpoint into a session that already runs
the same program does (program.py). So when a version stops serving, its session, once the last
request on it has finished, is kept here as a standby; a later version with the same program
key (a retrain of the model: same graph, new variables) takes it and restores its own variables
into it, and its warmup then runs on executors that already exist. At start-up a standby of every
model's serving version is loaded before the ports open, while the server is idle.

At most `per_model` sessions per model are kept (the oldest go); memory is then what two versions
take, which is also what a swap takes. A version whose program no standby has is loaded as
TensorFlow Serving loads every version, in a new session.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

from imgclf.serving.session import SavedModelSession


class StandbySessions:
    """Model name -> program key -> a session not serving anything. Thread-safe."""

    def __init__(self, per_model: int = 1):
        self.per_model = max(0, per_model)
        self._lock = threading.Lock()
        self._kept: dict[str, OrderedDict[str, SavedModelSession]] = {}
        self._gone: set[str] = set()      # models removed from the config: nothing kept for them

    def take(self, model: str, key: str | None) -> SavedModelSession | None:
        """The standby session of `model` for the program `key`, now the caller's; None if none."""
        if key is None:
            return None
        with self._lock:
            self._gone.discard(model)         # loading again: the model is back
            return self._kept.get(model, OrderedDict()).pop(key, None)

    def keep(self, model: str, key: str, session: SavedModelSession) -> None:
        """Offer a session no request uses any more; beyond `per_model`, the oldest is let go
        (its session is deleted in the background: session.py)."""
        dropped = []
        with self._lock:
            if self.per_model == 0 or model in self._gone:
                return
            kept = self._kept.setdefault(model, OrderedDict())
            if key in kept:
                dropped.append(kept.pop(key))
            kept[key] = session
            while len(kept) > self.per_model:
                dropped.append(kept.popitem(last=False)[1])
        del dropped          # outside the lock: the last reference may delete a session

    def keys(self, model: str) -> list[str]:
        with self._lock:
            return list(self._kept.get(model, ()))

    def forget(self, model: str) -> None:
        """The model left the config: its standbys go, and so do the sessions of its versions when
        their last requests finish, until it loads a version again."""
        with self._lock:
            self._gone.add(model)
            dropped = self._kept.pop(model, None)
        del dropped

    def on_release(self, owner: object, model: str, key: str | None, session: SavedModelSession) -> None:
        """When `owner` (a servable) is gone, that is, when the last request on it has finished,
        offer `session` as a standby."""
        if key is None:
            return
        weakref.finalize(owner, self.keep, model, key, session).atexit = False
