"""The running policy, and reloading it without a restart: a bad file never replaces a good one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter, Gauge

from loopwise.config_files import ConfigFileError
from loopwise.logging import get_logger
from loopwise_router.policy import Policy, load_policy

log = get_logger(__name__)

POLICY_RELOADS = Counter(
    "loopwise_router_policy_reloads_total",
    "Policy reload attempts by result (loaded, rejected, unchanged)",
    ["result"],
)
POLICY_LOADED = Gauge(
    "loopwise_router_policy_loaded_timestamp_seconds", "Unix time the running policy was loaded"
)
for _result in ("loaded", "rejected", "unchanged"):
    POLICY_RELOADS.labels(_result)


@dataclass(frozen=True)
class ReloadResult:
    """What a reload attempt did."""

    result: str
    version: str
    error: ConfigFileError | None = None


class PolicyHolder:
    """Holds the running policy; `reload` swaps in a changed file only if it is valid."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.current = load_policy(self.path)
        self._stamp = self._file_stamp()
        POLICY_LOADED.set_to_current_time()

    def __call__(self) -> Policy:
        return self.current

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime, stat.st_size

    def reload(self, force: bool = False) -> ReloadResult:
        """Load the file again if it changed (or if forced); keep the running one on error."""
        stamp = self._file_stamp()
        if not force and stamp == self._stamp:
            return ReloadResult("unchanged", self.current.version)
        self._stamp = stamp  # a rejected file is not retried until it changes again
        try:
            policy = load_policy(self.path)
        except ConfigFileError as exc:
            POLICY_RELOADS.labels("rejected").inc()
            log.error(
                "policy_rejected",
                file=exc.file,
                line=exc.line,
                rule=exc.rule,
                reason=exc.message,
                running_version=self.current.version,
            )
            return ReloadResult("rejected", self.current.version, exc)
        if policy.version == self.current.version:
            POLICY_RELOADS.labels("unchanged").inc()
            return ReloadResult("unchanged", policy.version)
        previous = self.current.version
        self.current = policy
        POLICY_RELOADS.labels("loaded").inc()
        POLICY_LOADED.set_to_current_time()
        log.info("policy_loaded", version=policy.version, previous=previous, file=str(self.path))
        return ReloadResult("loaded", policy.version)
