"""Independent peers: smpplib (a well-known synchronous SMPP library) on the other end.

smpplib as an ESME binds to our Simulator; smpplib's PDU classes behind a bare socket play a
minimal SMSC for our SmppConnector. Each side's bytes are read by code we did not write.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

import smpplib.client
import smpplib.consts
import smpplib.smpp

from smsrelay.smpp.pdu import MessageState, Tag
from smsrelay.smpp.receipts import parse_receipt

from .conftest import DESTINATION, SOURCE, Inbox, MakeConnector, MakeSimulator, eventually, part


def _smpplib_esme(port: int, replies_wanted: int, seen: dict[str, list[Any]]) -> None:
    client = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
    # smpplib calls handlers with pdu= as a keyword, which list.append does not take
    client.set_message_sent_handler(lambda pdu: seen["sent"].append(pdu))  # noqa: PLW0108
    client.set_message_received_handler(lambda pdu: seen["received"].append(pdu))  # noqa: PLW0108
    client.connect()
    try:
        client.bind_transceiver(system_id="peer", password="pw")
        seen["submitted"].append(
            client.send_message(
                source_addr_ton=1,
                source_addr_npi=1,
                source_addr=SOURCE,
                dest_addr_ton=1,
                dest_addr_npi=1,
                destination_addr=DESTINATION,
                short_message=b"hello from smpplib",
                registered_delivery=1,
            )
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            not seen["sent"] or len(seen["received"]) < replies_wanted
        ):
            client.read_once()
        client.unbind()
    finally:
        client.disconnect()


async def test_smpplib_esme_submits_and_gets_receipt_and_reply(
    make_simulator: MakeSimulator,
) -> None:
    simulator = await make_simulator(system_id="peer", password="pw", delivery_rate=1.0)
    seen: dict[str, list[Any]] = {"sent": [], "received": [], "submitted": []}
    esme = asyncio.create_task(asyncio.to_thread(_smpplib_esme, simulator.port, 2, seen))

    await eventually(lambda: simulator.stats.receipts_acked == 1, timeout=10, what="receipt ack")
    async with asyncio.timeout(10):
        assert await simulator.inject_reply(DESTINATION, SOURCE, "Merci !") == [0]
    async with asyncio.timeout(15):
        await esme

    [resp] = seen["sent"]
    message_id = resp.message_id.decode() if isinstance(resp.message_id, bytes) else resp.message_id
    [record] = simulator.received
    assert record.message_id == message_id
    assert (record.source, record.destination) == (SOURCE, DESTINATION)
    assert record.short_message == b"hello from smpplib"
    assert record.registered_delivery == 1

    receipt, reply = seen["received"]
    assert receipt.esm_class == 0x04
    receipted = receipt.receipted_message_id
    assert (receipted.decode() if isinstance(receipted, bytes) else receipted) == message_id
    assert receipt.message_state == MessageState.DELIVERED
    text = parse_receipt(receipt.short_message.decode())
    assert text is not None and text.id == message_id and text.stat == "DELIVRD"
    assert (reply.short_message, reply.data_coding) == (b"Merci !", 0)
    assert reply.source_addr in (DESTINATION, DESTINATION.encode())


# --- our connector against an smpplib-built SMSC --------------------------------------------


def _recv_pdu(conn: socket.socket) -> Any:
    def exact(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ConnectionError("peer closed")
            data += chunk
        return data

    head = exact(4)
    (length,) = struct.unpack(">I", head)
    raw = head + exact(length - 4)
    return smpplib.smpp.parse_pdu(raw, client=_SEQUENCES, allow_unknown_opt_params=True)


_SEQUENCES = smpplib.client.SimpleSequenceGenerator()


def _send(conn: socket.socket, command: str, sequence: int, **fields: Any) -> None:
    pdu = smpplib.smpp.make_pdu(command, client=_SEQUENCES, **fields)
    pdu.sequence = sequence  # smpplib ignores a sequence passed to make_pdu
    conn.sendall(pdu.generate())


def _mini_smsc(listener: socket.socket, log: dict[str, Any]) -> None:
    listener.settimeout(10)
    conn, _ = listener.accept()
    conn.settimeout(10)
    with conn:
        bind = _recv_pdu(conn)
        log["bind"] = bind
        _send(conn, "bind_transceiver_resp", sequence=bind.sequence, system_id="mini")
        submit = _recv_pdu(conn)
        log["submit"] = submit
        _send(conn, "submit_sm_resp", sequence=submit.sequence, message_id="ABC123")
        _send(
            conn,
            "deliver_sm",
            sequence=1,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr=DESTINATION,
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr=SOURCE,
            esm_class=4,
            short_message=b"id:ABC123 sub:001 dlvrd:001 submit date:2403091405 "
            b"done date:2403091406 stat:DELIVRD err:000 text:hello",
            receipted_message_id="ABC123",
            message_state=2,
        )
        while True:
            pdu = _recv_pdu(conn)
            if pdu.command == "deliver_sm_resp":
                log["deliver_sm_resp"] = pdu
            elif pdu.command == "unbind":
                log["unbind"] = pdu
                _send(conn, "unbind_resp", sequence=pdu.sequence)
                return
            elif pdu.command == "enquire_link":
                _send(conn, "enquire_link_resp", sequence=pdu.sequence)


async def test_our_connector_against_an_smpplib_smsc(
    make_connector: MakeConnector, inbox: Inbox
) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    log: dict[str, Any] = {}
    smsc = asyncio.create_task(asyncio.to_thread(_mini_smsc, listener, log))
    port = listener.getsockname()[1]
    try:
        connector = await make_connector(port, inbox, system_id="esme", password="pw")
        outcome = await connector.submit(part(payload=b"bonjour", ref=9, total=2, seq=1))
        assert (outcome.status, outcome.message_id) == (0, "ABC123")
        await eventually(lambda: len(inbox.receipts) == 1, what="receipt")
        await eventually(lambda: "deliver_sm_resp" in log, what="deliver_sm_resp")
        await connector.stop()
        async with asyncio.timeout(10):
            await smsc
    finally:
        listener.close()

    bind = log["bind"]
    assert bind.command == "bind_transceiver"
    assert bind.system_id in (b"esme", "esme") and bind.password in (b"pw", "pw")
    assert bind.interface_version == 0x34
    submit = log["submit"]
    assert submit.source_addr in (SOURCE, SOURCE.encode())
    assert submit.destination_addr in (DESTINATION, DESTINATION.encode())
    assert (submit.source_addr_ton, submit.source_addr_npi) == (1, 1)
    assert (submit.dest_addr_ton, submit.dest_addr_npi) == (1, 1)
    assert (submit.esm_class, submit.registered_delivery) == (0x40, 1)
    assert submit.short_message == bytes.fromhex("050003090201") + b"bonjour"
    assert log["deliver_sm_resp"].status == smpplib.consts.SMPP_ESME_ROK
    assert "unbind" in log
    [receipt] = inbox.receipts
    assert receipt.tlvs[Tag.RECEIPTED_MESSAGE_ID].rstrip(b"\0") == b"ABC123"
    assert receipt.tlvs[Tag.MESSAGE_STATE] == b"\x02"
