"""The MLLP listener: each HL7 v2 SIU/ADT message is ingested like a FHIR change, then ACKed.

An AA goes back only after every resource the message carries is stored (ingest commits each
one); a resent message is the same resource versions again, which ingest records once, so a
duplicate control id is acknowledged and changes nothing. A bad message gets AR/AE with the
reason and the connection stays open; a frame cut off by a disconnect was never acknowledged."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import hl7.mllp

from connector.hl7v2 import (
    MAX_MESSAGE_BYTES,
    SOURCE,
    Hl7Rejected,
    Mapped,
    ack,
    header,
    map_message,
    parse,
)
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest

log = logging.getLogger(__name__)

DEFAULT_PORT = 2575  # the IANA port for HL7 over MLLP


def handle_block(rt: Runtime, block: bytes) -> bytes:
    """One MLLP block in, its ACK out; blocking (ingest is synchronous)."""
    head = None
    try:
        message = parse(block)
        head = header(message, rt.settings.zone)  # first: a refusal echoes its control id
        mapped: Mapped = map_message(message, rt.settings.zone)
        outcomes = [ingest(rt, resource, SOURCE).outcome for resource in mapped.resources]
    except Hl7Rejected as rejected:
        log.warning("hl7 message %s refused (%s %s)", head.control_id if head else "-",
                    rejected.ack_code, rejected.error_code)
        return ack(head, rejected.ack_code, rejected.reason, rejected.error_code,
                   rt.clock.now())
    log.info("hl7 %s^%s %s: %s", head.message_type, head.event, head.control_id,
             ", ".join(outcomes))
    return ack(head, "AA", now=rt.clock.now())


class Hl7Listener:
    """An asyncio MLLP server feeding `rt`; `start` binds, `close` stops accepting."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> int:
        """Bind and listen; the port actually bound (for port 0)."""
        self.server = await hl7.mllp.start_hl7_server(
            self._connection, host, port, limit=MAX_MESSAGE_BYTES)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _connection(self, reader: Any, writer: Any) -> None:
        peer = writer.get_extra_info("peername")
        # After an oversized message the library has dropped what it buffered; the rest of
        # that message still arrives and ends at its frame end without a start byte: skip it.
        skipping = False
        try:
            while True:
                try:
                    block = await reader.readblock()
                except asyncio.IncompleteReadError:
                    break  # EOF, possibly mid-frame: nothing of it was acknowledged
                except ValueError:  # over the size limit (asyncio's LimitOverrunError)
                    if not skipping:
                        writer.writeblock(ack(None, "AR", f"message larger than "
                                              f"{MAX_MESSAGE_BYTES} bytes", "100"))
                        await writer.drain()
                    skipping = True
                    continue
                except hl7.mllp.InvalidBlockError:
                    if not skipping:
                        writer.writeblock(ack(None, "AR", "not an MLLP frame: no start "
                                              "block (VT) character", "100"))
                        await writer.drain()
                    skipping = False
                    continue
                skipping = False
                try:
                    reply = await asyncio.to_thread(handle_block, self.rt, block)
                except Exception as exc:  # e.g. the database is away: no ACK, so the sender
                    # keeps the message and resends it on a new connection
                    log.error("hl7 message not stored (%s); closing the connection",
                              type(exc).__name__)
                    break
                writer.writeblock(reply)
                await writer.drain()
        except (ConnectionError, OSError):
            log.info("hl7 peer %s disconnected", peer)
        finally:
            writer.close()


async def serve(rt: Runtime, host: str, port: int) -> None:
    """Run the listener until cancelled."""
    listener = Hl7Listener(rt)
    bound = await listener.start(host, port)
    log.info("hl7 MLLP listener on %s:%s", host, bound)
    try:
        assert listener.server is not None
        await listener.server.serve_forever()
    finally:
        await listener.close()
