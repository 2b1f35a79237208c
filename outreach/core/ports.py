"""The ports every stage is written against: the EHR client, the enqueuer, and the Runtime that
carries one of each with the session factory, the journey set and the clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from channels import Channel, TemplateCatalog
from connector.client import FhirApi
from outreach.core.clock import Clock
from outreach.core.settings import Settings
from rules import JourneySet

# The one handle on the EHR: reads (send-time checks, verification, polling) and writes
# (write-back, reply actions) go through the same client.
EhrClient = FhirApi


class Enqueuer(Protocol):
    """Hands ids to workers by task name; called only after the transaction that produced them
    committed. A failed hand-over is logged, never raised: the sweeper finds the rows again."""

    def send_steps(self, step_ids: list[int]) -> None: ...

    def write_back(self, writeback_ids: list[int]) -> None: ...

    def poll(self) -> None: ...


@dataclass
class Runtime:
    """What a stage may use, built once by `outreach.runtime.build_runtime`. `ehr` is None when
    no EHR is configured (simulate, some tests): stages that need it say so."""

    settings: Settings
    sessions: sessionmaker[Session]
    clock: Clock
    journeys: JourneySet
    enqueue: Enqueuer
    ehr: EhrClient | None
    channels: Mapping[str, Channel]
    templates: TemplateCatalog

    @property
    def engine(self) -> Engine:
        bind = self.sessions.kw["bind"]
        assert isinstance(bind, Engine)
        return bind
