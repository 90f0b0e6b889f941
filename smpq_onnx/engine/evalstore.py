"""Evaluations persisted as they finish, so a killed search resumes without repeating any.

One JSON line per evaluated policy, appended and flushed (and fsynced) right after the
evaluation: a kill -9 loses at most the evaluation in flight. The file name carries a hash of
everything an evaluation depends on (model, data, profile, metric, calibration settings,
engine), so a changed input never reuses stale results.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from smpq_onnx.quant.options import Mixture
from smpq_onnx.quant.policy import Policy

FAST = "fast"
DEPLOYED = "deployed"
"""Engines: the fake-quant evaluator, and the emitted QDQ model run as it is."""


def policy_key(policy: Policy, engine: str = FAST) -> str:
    if any(isinstance(option, Mixture) for option in policy.values()):
        key = "mix:" + json.dumps({name: str(o) for name, o in policy.items()}, sort_keys=True,
                                  separators=(",", ":"))
    else:
        key = json.dumps(policy.to_json_dict(), sort_keys=True, separators=(",", ":"))
    return key if engine == FAST else f"{engine}:{key}"


class EvaluationStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.loaded: dict[str, float] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    self.loaded[record["policy"]] = float(record["score"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a line cut short by a kill
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")

    def get(self, policy: Policy, *, engine: str = FAST) -> float | None:
        return self.loaded.get(policy_key(policy, engine))

    def put(self, policy: Policy, score: float, *, engine: str = FAST) -> None:
        key = policy_key(policy, engine)
        self.loaded[key] = score
        self._handle.write(json.dumps({"policy": key, "score": score}) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def fingerprint(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]
