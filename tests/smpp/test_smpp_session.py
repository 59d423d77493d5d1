"""Session: the bind table, sequence numbers, window and deadlines, ESME and SMSC in memory."""

from __future__ import annotations

import struct

import pytest

from smsrelay.smpp.codec import encode
from smsrelay.smpp.errors import LocalProtocolError, RemoteProtocolError
from smsrelay.smpp.pdu import (
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CommandId,
    CommandStatus,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
)
from smsrelay.smpp.session import (
    MAX_SEQUENCE,
    AdaptivePace,
    BindState,
    ReadingClock,
    Role,
    Session,
    StrayResponse,
    TokenBucket,
    attempts_after_link_lost,
    reconnect_delay,
)


def pipe(sender: Session, receiver: Session, pdu: Pdu, now: float = 0.0) -> list[object]:
    """Send ``pdu`` from one session into the other; what the receiver reads."""
    return list(receiver.receive(sender.send(pdu, now), now))


def bound_pair(
    bind: type[BindTransmitter | BindReceiver | BindTransceiver] = BindTransceiver,
    **kwargs: float,
) -> tuple[Session, Session]:
    esme, smsc = Session(Role.ESME, **kwargs), Session(Role.SMSC, **kwargs)  # type: ignore[arg-type]
    seq = esme.next_sequence()
    pipe(esme, smsc, bind(sequence=seq, system_id="a", password="b"))
    resp = {BindTransmitter: BindTransmitterResp, BindReceiver: BindReceiverResp}.get(
        bind, BindTransceiverResp
    )
    pipe(smsc, esme, resp(sequence=seq, system_id="smsc"))
    return esme, smsc


@pytest.mark.parametrize(
    ("bind", "state"),
    [
        (BindTransmitter, BindState.BOUND_TX),
        (BindReceiver, BindState.BOUND_RX),
        (BindTransceiver, BindState.BOUND_TRX),
    ],
)
def test_bind_moves_both_sides_to_the_same_bound_state(bind: type, state: BindState) -> None:
    esme, smsc = bound_pair(bind)
    assert esme.state is smsc.state is state
    assert esme.is_bound and smsc.is_bound


def test_refused_bind_returns_both_sides_to_open() -> None:
    esme, smsc = Session(Role.ESME), Session(Role.SMSC)
    pipe(esme, smsc, BindTransmitter(sequence=1, system_id="a", password="x"))
    assert esme.state is smsc.state is BindState.BINDING_TX
    pipe(smsc, esme, BindTransmitterResp(sequence=1, status=CommandStatus.ESME_RINVPASWD))
    assert esme.state is smsc.state is BindState.OPEN


def test_generic_nack_to_a_bind_returns_to_open() -> None:
    esme = Session(Role.ESME)
    esme.send(BindTransmitter(sequence=1), 0)
    esme.receive(encode(GenericNack(sequence=1, status=CommandStatus.ESME_RINVCMDID)), 0)
    assert esme.state is BindState.OPEN


def test_submit_response_and_unbind_in_memory() -> None:
    esme, smsc = bound_pair()
    [submit] = pipe(esme, smsc, SubmitSm(sequence=esme.next_sequence(), short_message=b"hi"))
    assert isinstance(submit, SubmitSm) and esme.in_flight == 1
    [resp] = pipe(smsc, esme, SubmitSmResp(sequence=submit.sequence, message_id="1"))
    assert resp == SubmitSmResp(sequence=submit.sequence, message_id="1")
    assert esme.in_flight == 0
    [deliver] = pipe(smsc, esme, DeliverSm(sequence=smsc.next_sequence()))
    pipe(esme, smsc, DeliverSmResp(sequence=deliver.sequence))  # type: ignore[attr-defined]
    assert smsc.in_flight == 0
    unbind_seq = esme.next_sequence()
    pipe(esme, smsc, Unbind(sequence=unbind_seq))
    assert esme.state is smsc.state is BindState.UNBINDING
    pipe(smsc, esme, UnbindResp(sequence=unbind_seq))
    assert esme.state is smsc.state is BindState.CLOSED


def test_a_link_check_while_unbind_resp_is_awaited_is_answered() -> None:
    # The SMSC's enquire_link crossing our unbind: refusing it (ESME_RINVBNDSTS) told a
    # carrier the link was broken while it was closing cleanly (the interop review).
    esme, smsc = bound_pair()
    pipe(esme, smsc, Unbind(sequence=esme.next_sequence()))
    [check] = pipe(smsc, esme, EnquireLink(sequence=smsc.next_sequence()))
    [answer] = pipe(esme, smsc, EnquireLinkResp(sequence=check.sequence))
    assert answer == EnquireLinkResp(sequence=check.sequence)
    assert esme.state is smsc.state is BindState.UNBINDING


def test_an_alert_notification_is_taken_with_no_answer_owed() -> None:
    # SMPP 3.4 4.12: it has no response PDU. Read as an unknown command, it was answered with
    # a generic_nack (ESME_RINVCMDID) and logged as a refusal (the interop review).
    esme, smsc = bound_pair()
    body = bytes([1, 1]) + b"33612345678\0" + bytes([1, 1]) + b"33757000001\0"
    raw = struct.pack(">IIII", 16 + len(body), 0x00000102, 0, smsc.next_sequence()) + body
    [event] = esme.receive(raw, 0)
    assert isinstance(event, AlertNotification)
    assert esme.state is BindState.BOUND_TRX and esme.outstanding() == {}


# (role sending, state, request) that the table refuses locally
@pytest.mark.parametrize(
    ("role", "pdu"),
    [
        (Role.ESME, SubmitSm(sequence=1)),
        (Role.ESME, Unbind(sequence=1)),
        (Role.SMSC, DeliverSm(sequence=1)),
        (Role.SMSC, BindTransmitter(sequence=1)),
        (Role.SMSC, Unbind(sequence=1)),
    ],
)
def test_requests_not_allowed_when_open_are_refused_locally(role: Role, pdu: Pdu) -> None:
    with pytest.raises(LocalProtocolError):
        Session(role).send(pdu, 0)


def test_transmitter_cannot_be_delivered_to_and_receiver_cannot_submit() -> None:
    esme, smsc = bound_pair(BindTransmitter)
    with pytest.raises(LocalProtocolError):
        smsc.send(DeliverSm(sequence=1), 0)
    esme, smsc = bound_pair(BindReceiver)
    with pytest.raises(LocalProtocolError):
        esme.send(SubmitSm(sequence=2), 0)


def test_data_sm_goes_to_receivers_only_and_counts_in_the_window() -> None:
    esme, smsc = bound_pair(BindTransceiver)
    smsc.window = 1
    smsc.send(DataSm(sequence=1), 0)
    assert smsc.in_flight == 1 and smsc.window_full
    with pytest.raises(LocalProtocolError):
        smsc.send(DataSm(sequence=2), 0)
    assert pipe(esme, smsc, DataSmResp(sequence=1)) == [DataSmResp(sequence=1)]
    assert smsc.in_flight == 0
    esme, smsc = bound_pair(BindTransmitter)
    with pytest.raises(LocalProtocolError):
        smsc.send(DataSm(sequence=3), 0)


def test_a_request_that_cannot_be_encoded_leaves_no_trace() -> None:
    esme, _ = bound_pair(BindTransceiver)
    with pytest.raises(LocalProtocolError):
        esme.send(SubmitSm(sequence=7, source_addr="1" * 30), 0)
    assert esme.in_flight == 0 and esme.outstanding() == {}
    esme.send(SubmitSm(sequence=7), 0)  # the same sequence is free
    assert esme.in_flight == 1


def test_a_delivery_while_we_unbind_is_refused_as_try_again_later() -> None:
    esme, smsc = bound_pair(BindTransceiver)
    pipe(esme, smsc, Unbind(sequence=esme.next_sequence()))
    [error] = esme.receive(encode(DeliverSm(sequence=9)), 0)
    assert isinstance(error, RemoteProtocolError)
    assert (error.status, error.sequence) == (CommandStatus.ESME_RX_T_APPN, 9)


def test_submit_before_bind_is_answered_with_invalid_bind_status() -> None:
    smsc = Session(Role.SMSC)
    [error] = smsc.receive(encode(SubmitSm(sequence=4)), 0)
    assert isinstance(error, RemoteProtocolError)
    assert (error.status, error.sequence) == (CommandStatus.ESME_RINVBNDSTS, 4)


def test_second_bind_is_answered_already_bound() -> None:
    _, smsc = bound_pair()
    [error] = smsc.receive(encode(BindTransceiver(sequence=9)), 0)
    assert isinstance(error, RemoteProtocolError)
    assert error.status == CommandStatus.ESME_RALYBND


def test_enquire_link_is_allowed_before_bind() -> None:
    smsc = Session(Role.SMSC)
    assert smsc.receive(encode(EnquireLink(sequence=1)), 0) == [EnquireLink(sequence=1)]


def test_sequence_numbers_start_at_one_and_wrap_after_the_maximum() -> None:
    assert Session(Role.ESME).next_sequence() == 1
    session = Session(Role.ESME, last_sequence=MAX_SEQUENCE - 1)
    assert [session.next_sequence() for _ in range(3)] == [MAX_SEQUENCE, 1, 2]


def test_window_refuses_one_more_and_a_response_frees_a_slot() -> None:
    esme, _ = bound_pair(window=3)
    for _ in range(3):
        esme.send(SubmitSm(sequence=esme.next_sequence()), 0)
    assert esme.window_full
    with pytest.raises(LocalProtocolError, match="window"):
        esme.send(SubmitSm(sequence=esme.next_sequence()), 0)
    esme.send(EnquireLink(sequence=esme.next_sequence()), 0)  # not counted by the window
    esme.receive(encode(SubmitSmResp(sequence=2, message_id="x")), 0)
    assert not esme.window_full and esme.in_flight == 2


def test_unknown_response_is_returned_but_changes_nothing() -> None:
    esme, _ = bound_pair()
    assert esme.receive(encode(SubmitSmResp(sequence=999)), 0) == [SubmitSmResp(sequence=999)]
    assert esme.in_flight == 0


def test_a_response_of_another_command_is_stray_and_leaves_its_request_waiting() -> None:
    # An enquire_link_resp on a submit's sequence number was taken as the submit's answer
    # (ESME_RSYSERR), and the part went again: the SMSC had it twice.
    esme, _ = bound_pair()
    sequence = esme.next_sequence()
    esme.send(SubmitSm(sequence=sequence, short_message=b"once"), 0)
    [stray] = esme.receive(encode(EnquireLinkResp(sequence=sequence)), 0)
    assert isinstance(stray, StrayResponse) and stray.request is CommandId.SUBMIT_SM
    assert esme.in_flight == 1  # still waiting for its own answer
    [answer] = esme.receive(encode(SubmitSmResp(sequence=sequence, message_id="7")), 0)
    assert answer == SubmitSmResp(sequence=sequence, message_id="7") and esme.in_flight == 0


def test_a_generic_nack_answers_any_request() -> None:
    esme, _ = bound_pair()
    sequence = esme.next_sequence()
    esme.send(SubmitSm(sequence=sequence), 0)
    nack = GenericNack(sequence=sequence, status=CommandStatus.ESME_RTHROTTLED)
    assert esme.receive(encode(nack), 0) == [nack]
    assert esme.in_flight == 0


def test_deadlines_expire_in_order_from_the_passed_in_now() -> None:
    esme, _ = bound_pair(response_timeout=10.0)
    esme.send(SubmitSm(sequence=esme.next_sequence()), now=100.0)
    esme.send(SubmitSm(sequence=esme.next_sequence()), now=105.0)
    assert esme.next_deadline() == 110.0
    assert esme.expire(109.9) == []
    [(seq, request)] = esme.expire(110.0)
    assert (seq, request.deadline) == (2, 110.0)
    assert esme.in_flight == 1
    assert [s for s, _ in esme.expire(200.0)] == [3]


def test_the_reading_clock_stands_still_while_paused_so_deadlines_do_too() -> None:
    # A request sent before a pause and one sent during it: neither expires while we do not
    # read (their answers may be waiting unread); after the pause each has what it had left.
    esme, _ = bound_pair(response_timeout=10.0)
    clock = ReadingClock()
    esme.send(SubmitSm(sequence=esme.next_sequence()), now=clock.time(100.0))
    clock.pause(104.0)
    esme.send(SubmitSm(sequence=esme.next_sequence()), now=clock.time(105.0))
    assert clock.time(500.0) == 104.0 and clock.pause_span(500.0) == 396.0
    assert esme.expire(clock.time(500.0)) == []
    clock.resume(500.0)
    assert clock.pause_span(501.0) == 0.0
    assert esme.expire(clock.time(505.9)) == []
    assert [seq for seq, _ in esme.expire(clock.time(506.0))] == [2]  # 6 s left at the pause
    assert [seq for seq, _ in esme.expire(clock.time(510.0))] == [3]  # 10 s from the resume


def test_enquire_link_is_due_after_silence_and_not_twice() -> None:
    esme, _ = bound_pair(enquire_link_interval=30.0)
    esme.receive(b"", now=1000.0)
    assert not esme.enquire_link_due(1029.0)
    assert esme.enquire_link_due(1030.0)
    esme.send(EnquireLink(sequence=esme.next_sequence()), 1030.0)
    assert not esme.enquire_link_due(1100.0)


def test_close_forgets_everything_outstanding() -> None:
    esme, _ = bound_pair()
    esme.send(SubmitSm(sequence=esme.next_sequence()), 0)
    assert esme.close() == [2]
    assert esme.state is BindState.CLOSED and esme.in_flight == 0


def test_token_bucket_reserves_in_order_at_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=2.0)
    assert [bucket.reserve(0.0) for _ in range(4)] == pytest.approx([0.0, 0.0, 0.1, 0.2])
    assert bucket.reserve(1.0) == 0.0


def test_token_bucket_try_take_refuses_over_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=2.0)
    assert [bucket.try_take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.try_take(0.5) and not bucket.try_take(0.5)


@pytest.mark.parametrize("attempt", range(12))
def test_reconnect_delay_is_capped_exponential_with_jitter(attempt: int) -> None:
    low, high = reconnect_delay(attempt, 0.5, 30.0, 0.0), reconnect_delay(attempt, 0.5, 30.0, 0.999)
    base = min(30.0, 0.5 * 2**attempt)
    assert low == pytest.approx(base / 2)
    assert base / 2 <= high < base
    assert reconnect_delay(10_000, 0.5, 30.0, 0.5) <= 30.0


def test_a_link_dropped_just_after_its_bind_keeps_backing_off() -> None:
    assert attempts_after_link_lost(0, 0.2, 30.0) == 1
    assert attempts_after_link_lost(4, 0.2, 30.0) == 5  # the delay keeps doubling
    assert attempts_after_link_lost(4, 30.0, 30.0) == 0  # a link that lasted starts over
    # So does one that carried traffic, however short: a flaky link, not a refusing SMSC.
    assert attempts_after_link_lost(4, 0.2, 30.0, carried_traffic=True) == 0


def test_the_pace_is_none_until_the_smsc_first_refuses() -> None:
    pace = AdaptivePace()
    for i in range(50):
        pace.taken(i / 100)
        assert pace.delay(i / 100) == 0.0
    assert pace.rate is None


def test_a_refusal_paces_at_a_little_under_what_was_taken_then_finds_the_rate() -> None:
    pace = AdaptivePace()
    for i in range(50):  # 50 taken in the last half second
        pace.taken(0.5 + i / 100)
    pace.refused(1.0)
    assert pace.rate == pytest.approx(45.0)
    pace.taken(1.1)
    assert pace.rate == pytest.approx(46.0)  # doubling per second while all is taken
    pace.refused(1.15)
    assert pace.rate == pytest.approx(46.0)  # the same wave of refusals: one cut
    pace.refused(1.5)
    assert pace.rate == pytest.approx(46.0 * 0.7)
    pace.taken(1.6)
    assert pace.rate == pytest.approx(46.0 * 0.7 + 0.05)  # then slowly


def test_the_pace_spaces_slots_never_goes_under_the_floor_and_is_forgotten() -> None:
    pace = AdaptivePace()
    pace.refused(0.0)
    assert pace.rate == 10.0  # refused before taking anything: the first guess
    assert pace.delay(0.0) == 0.0 and pace.delay(0.0) == pytest.approx(0.1)
    for t in range(1, 40):
        pace.refused(float(t))
    assert pace.rate == 1.0
    assert pace.delay(100.0) == 0.0 and pace.rate is None  # 60 s without a refusal


def test_a_pace_cut_to_a_few_a_second_climbs_by_at_least_one_a_second_each_second() -> None:
    pace = AdaptivePace()
    for t in range(40):  # cut down to the floor
        pace.refused(float(t))
    assert pace.rate == 1.0
    now, sent = 40.0, 0
    while now < 50.0:  # ten seconds of taking every part at the pace
        now += pace.delay(now)
        pace.taken(now)
        sent += 1
    assert pace.rate is not None and pace.rate >= 9.0
    assert sent >= 40  # 5 % a second from 1/s would have sent about a dozen
