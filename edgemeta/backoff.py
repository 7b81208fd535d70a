"""The one back-off policy: reconnects, redelivery of a batch that failed, call retries.

The only module that imports tenacity: its wait strategies compute the delays;
the main loop and the network thread do the waiting themselves (a deadline
in the loop, an event wait), so nothing blocks on tenacity's own sleep.
"""

from __future__ import annotations

from dataclasses import dataclass

from tenacity import RetryCallState, wait_exponential, wait_random_exponential
from tenacity.wait import wait_base


def _state(attempt: int) -> RetryCallState:
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempt)
    return state


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays ``initial · 2^(n-1)`` capped at ``cap``, for the n-th failure (n ≥ 1).

    With ``jitter`` (reconnects) the delay is drawn between half and all of
    it, so many nodes do not reconnect in step; without it (remote
    queries) the delays are exact: SPEC §3 fixes ``min(0.5·2^n, timeout)``.
    """

    initial: float = 0.5
    cap: float = 30.0
    jitter: bool = True

    def _strategy(self) -> wait_base:
        if self.jitter:
            half, top = self.initial / 2, self.cap / 2
            return wait_exponential(multiplier=half, max=top) + wait_random_exponential(
                multiplier=half, max=top
            )
        return wait_exponential(multiplier=self.initial, exp_base=2, min=0, max=self.cap)

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row."""
        return min(self.cap, float(self._strategy()(_state(failures))))
