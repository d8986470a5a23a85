"""Counters of one received message stream: what arrived, what was handed on, gaps in ``seq``
(messages skipped upstream or here), ``seq`` going back (the sender restarted), and malformed
messages rejected, by reason (logged at a bounded rate, never raised)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any


@dataclass
class MessageCounters:
    received: int = 0
    delivered: int = 0
    skipped: int = 0
    seq_resets: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    _last_seq: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def reject(self, reason: str, detail: str, log: logging.Logger, what: str = "message") -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        n = self.rejected_total
        if n <= 10 or n % 1000 == 0:
            log.warning("rejected %s (%s), %d rejected so far: %s", what, reason, n, detail)

    def account_seq(self, source: str, seq: int) -> bool:
        """Count the gap before ``seq`` from ``source``; False when ``seq`` went back (a restart)."""
        last = self._last_seq.get(source)
        self._last_seq[source] = seq
        if last is None or seq > last:
            self.skipped += 0 if last is None else seq - last - 1
            return True
        self.seq_resets += 1
        return False

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if not k.startswith("_") and k != "rejected"}
        out["rejected"] = self.rejected_total
        out["rejected_by_reason"] = dict(self.rejected)
        return out
