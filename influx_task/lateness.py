"""What a series' checkpoint remembers to find and rescore late data within the lateness horizon.

`digests`: for each window-grid block of the data the scores were computed from,
its end and a hash of its gridded values. A pass re-reads the blocks, and the
first whose hash changed says from where to rescore. `snapshots`: the episode
state at earlier checkpoints, so a rescore restarts with the state it had then.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from stad.influx_task.events import Episode


def digest(values: npt.NDArray[np.float64]) -> str:
    """A short hash of gridded (T, C) values, NaN included."""
    data = np.ascontiguousarray(np.where(np.isnan(values), np.nan, values), dtype="<f8")
    return hashlib.blake2b(data.tobytes(), digest_size=8).hexdigest()


@dataclass
class LateState:
    digests: dict[int, tuple[int, str]] = field(default_factory=dict)  # block start -> (stop, hash)
    snapshots: list[tuple[int, Episode | None]] = field(default_factory=list)  # (next_ns, episode)

    def prune(self, keep_from_ns: int) -> None:
        """Forget what lies wholly before `keep_from_ns`, keeping one snapshot at or before it."""
        self.digests = {b: d for b, d in self.digests.items() if d[0] > keep_from_ns}
        older = [s for s in self.snapshots if s[0] <= keep_from_ns]
        self.snapshots = older[-1:] + [s for s in self.snapshots if s[0] > keep_from_ns]

    def snapshot_at_or_before(self, t_ns: int) -> tuple[int, Episode | None] | None:
        found = [s for s in self.snapshots if s[0] <= t_ns]
        return found[-1] if found else None

    def to_json(self) -> str:
        if not self.digests and not self.snapshots:
            return ""
        return json.dumps(
            {
                "digests": [[b, stop, h] for b, (stop, h) in sorted(self.digests.items())],
                "snapshots": [[t, e.to_json() if e else ""] for t, e in self.snapshots],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> LateState:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            digests={int(b): (int(stop), str(h)) for b, stop, h in data["digests"]},
            snapshots=[(int(t), Episode.from_json(e)) for t, e in data["snapshots"]],
        )
