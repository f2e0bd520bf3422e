"""The agent's link to its control plane (docs/sync.md): the MQTT client, the reconciler and its
worker, and the telemetry path (collector → outbox → sender). :class:`agent.daemon.Agent` makes
one with :meth:`AgentSync.create` when its config has a ``sync`` section."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.config import AgentSettings, Credentials
from agent.workflow import SpecError
from protos import sync_pb2

if TYPE_CHECKING:
    from agent.config import ResolvedSync
    from agent.daemon import Agent
    from agent.sync.mqtt import SyncClient
    from agent.sync.outbox import Outbox
    from agent.sync.reconciler import HttpFetcher, Reconciler
    from agent.sync.sender import OutboxSender
    from agent.sync.telemetry import TelemetryCollector
    from agent.sync.worker import ReconcileWorker

__all__ = ["AgentSync"]

log = logging.getLogger(__name__)


class AgentSync:
    """The agent's link to its control plane: the MQTT client, the reconciler and its worker, and
    the telemetry path (collector → outbox → sender).

    Desired states arrive on paho's network thread and are handed to the worker, which applies
    them (downloads, installs, compiles) on its own thread and publishes each reported state.
    After each apply ``on_reported`` runs first (the agent works out its lineages again)."""

    def __init__(
        self,
        resolved: ResolvedSync,
        client: SyncClient,
        fetcher: HttpFetcher,
        reconciler: Reconciler,
        *,
        outbox: Outbox | None = None,
        telemetry: TelemetryCollector | None = None,
        sender: OutboxSender | None = None,
        on_reported: Callable[[], object] | None = None,
    ) -> None:
        from agent.sync.worker import ReconcileWorker

        self.resolved = resolved
        self.client = client
        self.fetcher = fetcher
        self.reconciler = reconciler
        self.outbox = outbox
        self.telemetry = telemetry
        self.sender = sender
        self.on_reported = on_reported
        self.worker: ReconcileWorker = ReconcileWorker(reconciler, self._publish_reported)
        reconciler.on_applying = client.publish_reported
        reconciler.on_changed = self._publish_reported
        reconciler.telemetry = telemetry
        client.on_desired(self.worker.submit)
        self._stopped = False
        self._closed = False

    def _publish_reported(self, report: sync_pb2.ReportedState) -> bool:
        if self.on_reported is not None:
            try:
                self.on_reported()
            except Exception:
                log.exception("sync: updating the lineages after an apply failed")
        return self.client.publish_reported(report)

    @classmethod
    def create(cls, agent: Agent, settings: AgentSettings) -> AgentSync:
        """Everything from the settings and the enrolled credentials; ``SpecError`` naming the
        file when the credentials or the sync settings cannot be used."""
        from agent.manifest import ManifestError, load_public_key
        from agent.sync.mqtt import SyncClient
        from agent.sync.reconciler import HttpFetcher, Reconciler

        path = settings.credentials_file
        try:
            credentials = Credentials.load(path)
            resolved = settings.resolve_sync(credentials)
            public_key = load_public_key(resolved.signing_public_key)
        except (ValueError, ManifestError) as exc:
            raise SpecError(str(exc), source=str(path)) from exc
        try:  # TLS files are read here
            client = SyncClient.from_settings(resolved, agent_version=__version__)
        except (ValueError, OSError) as exc:
            raise SpecError(f"the MQTT settings cannot be used: {exc}", source="sync") from exc
        fetcher = HttpFetcher(resolved.control_plane_url, resolved.credential)
        reconciler = Reconciler(
            agent,
            fetcher,
            public_key,
            settings.data_dir,
            device_id=resolved.device_id,
            agent_version=__version__,
            profile=agent.profile.name if agent.profile else "",
        )
        outbox, telemetry, sender = cls._telemetry(agent, settings, resolved, client)
        return cls(
            resolved,
            client,
            fetcher,
            reconciler,
            outbox=outbox,
            telemetry=telemetry,
            sender=sender,
            on_reported=agent.refresh_lineages,
        )

    @staticmethod
    def _telemetry(
        agent: Agent, settings: AgentSettings, resolved: ResolvedSync, client: SyncClient
    ) -> tuple[Outbox | None, TelemetryCollector | None, OutboxSender | None]:
        """The outbox at ``<data_dir>/sync/outbox.db``, the collector that fills it and the
        sender that drains it; none of them when the outbox file is unusable (logged: the agent
        still runs its workflows and follows its control plane)."""
        from agent.sync.outbox import Outbox, OutboxError, RecordKind
        from agent.sync.sender import OutboxSender
        from agent.sync.telemetry import TelemetryCollector

        try:
            outbox = Outbox(settings.data_dir / "sync" / "outbox.db").open()
        except OutboxError as exc:
            log.error("sync: %s: no telemetry or events until the file is repaired or moved away", exc)
            return None, None, None
        sender = OutboxSender(outbox, client, resolved.device_id)

        def store(kind: RecordKind, payload: bytes) -> int | None:
            seq = outbox.append(kind, payload)
            if seq is not None:
                sender.notify()
            return seq

        telemetry = TelemetryCollector(
            interval_s=resolved.telemetry_interval_s,
            sink=store,
            data_dir=settings.data_dir,
            outbox_stats=outbox.stats,
            frame_drops=agent.frame_drops,
        )
        return outbox, telemetry, sender

    def restore(self) -> None:
        self.reconciler.restore()

    def start(self) -> None:
        self.worker.start()
        self.client.start()
        if self.telemetry is not None:
            self.telemetry.start()
        if self.sender is not None:
            self.sender.start()

    def stop(self) -> None:
        """Stop the link: sender, MQTT client, reconciler. Telemetry keeps counting until
        :meth:`close`, so the runs that drain after this are still counted."""
        if self._stopped:
            return
        self._stopped = True
        if self.sender is not None:
            self.sender.stop()
        self.client.close()
        self.fetcher.cancel()
        self.worker.stop()
        self.fetcher.close()

    def close(self) -> None:
        """After the last run: flush the final partial interval and the queued events into the
        outbox (sent at the next start) and close it."""
        self.stop()
        if self._closed:
            return
        self._closed = True
        self.reconciler.close()  # a clean stop: no crash is blamed on a candidate at the next start
        if self.telemetry is not None:
            self.telemetry.stop(flush=True)
        if self.outbox is not None:
            self.outbox.close()

    def status(self) -> dict[str, Any]:
        """The link's counters: connection, telemetry, outbox and sender."""
        return {
            "connected": self.client.connected.is_set(),
            "connections": self.client.connections,
            "last_error": self.client.last_error,
            "telemetry": dataclasses.asdict(self.telemetry.status()) if self.telemetry else None,
            "outbox": dataclasses.asdict(self.outbox.stats()) if self.outbox else None,
            "sender": dataclasses.asdict(self.sender.status()) if self.sender else None,
        }
