"""SmppLinkConfig.from_url and the ``smsc`` command group."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from smsrelay.carrier.simulator import Simulator
from smsrelay.carrier.simulator_cli import smsc
from smsrelay.carrier.smpp_client import SmppLinkConfig, validity_period
from smsrelay.smpp.concat import ConcatMethod

from .conftest import DESTINATION, SOURCE, Inbox, MakeConnector, eventually


def test_from_url_reads_credentials_host_port_and_settings() -> None:
    config = SmppLinkConfig.from_url(
        "smpp://my%40id:p%3Ass@smsc.example.net:2776?window=50&max_per_second=200.5"
        "&concat_method=sar&bind_mode=transmitter%2Breceiver&gsm_data_coding=3&system_type=VMA"
    )
    assert (config.host, config.port, config.system_id, config.password) == (
        "smsc.example.net",
        2776,
        "my@id",
        "p:ss",
    )
    assert (config.window, config.max_per_second, config.concat_method) == (
        50,
        200.5,
        ConcatMethod.SAR,
    )
    assert (config.bind_mode, config.gsm_data_coding, config.system_type) == (
        "transmitter+receiver",
        3,
        "VMA",
    )
    assert not config.tls


def test_from_url_smpps_means_tls_and_overrides_win() -> None:
    config = SmppLinkConfig.from_url("smpps://a:b@h?window=5", window=7, response_timeout=2.0)
    assert (config.tls, config.port, config.window, config.response_timeout) == (
        True,
        2775,
        7,
        2.0,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://a:b@h:1",
        "smpp://a:b@h:1?colour=blue",
        "smpp://a:b@h:1?window=0",
        "smpp://a:b@h:1?bind_mode=sideways",
        "smpp://a:b@h:1?concat_method=smoke",
        "smpp://a:b@h:1?validity_hours=49",
        "smpp://a:b@h:1?validity_hours=-1",
        "smpp://a:b@h:1?validity_hours=0.0001",
        "smpp://a:b@:1",
        # taken before, each quietly doing something else (the config review)
        "smpps://a:b@h:1?tls=no",  # a clear-text link: the scheme decides
        "smpp://a:b@h:1?tls=1",
        "smpp://a:b@h:1?gsm_data_coding=8",  # GSM septets labelled UCS-2
        "smpp://a:b@h:1?max_per_second=nan",  # no cap at all
        "smpp://a:b@h:1?response_timeout=inf",
        "smpp://a:b@h:1?reconnect_min=5&reconnect_max=1",
    ],
)
def test_from_url_refuses_what_it_cannot_use(url: str) -> None:
    with pytest.raises(ValueError):
        SmppLinkConfig.from_url(url)


@pytest.mark.parametrize(
    ("options", "url", "message"),
    [
        ({"window": "lots"}, "smpp://a:b@h", "window = 'lots': an integer is expected"),
        ({"window": 5.5}, "smpp://a:b@h", "window = 5.5: an integer is expected"),
        ({"window": True}, "smpp://a:b@h", "window = True: an integer is expected"),
        ({"bogus_opt": 1}, "smpp://a:b@h", "unknown SMPP link setting 'bogus_opt'"),
        ({}, "smpp://a:b@h:abc", "the URL's port is not a number"),
        ({}, "smpp://id:a/b@h:2775", "must be written %2F, %23 or %3F"),
        ({"tls": "nope"}, "smpps://a:b@h", "unknown SMPP link setting 'tls'"),
        # taken and never used (a connector holds at most 1,000 parts)
        ({"window": 1001}, "smpp://a:b@h", "window must be 1 to 1000"),
    ],
)
def test_a_connector_table_or_url_it_cannot_use_says_which_setting(
    options: dict[str, object], url: str, message: str
) -> None:
    # These failed at serve in Python's own words ("'<' not supported between instances of
    # 'str' and 'int'", "__init__() got an unexpected keyword argument").
    with pytest.raises(ValueError, match=re.escape(message)):
        SmppLinkConfig.from_url(url, **options)


@pytest.mark.parametrize(
    ("query", "period"),
    [
        ("", "000002000000000R"),
        ("?validity_hours=0.25", "000000001500000R"),
        ("?validity_hours=0", ""),
    ],
)
def test_each_part_tells_the_smsc_its_validity_48_hours_unless_set(query: str, period: str) -> None:
    config = SmppLinkConfig.from_url("smpp://a:b@h:1" + query)
    assert validity_period(config.validity_hours) == period


def test_every_command_help_has_an_example() -> None:
    runner = CliRunner()
    for args in (["--help"], ["reply", "--help"]):
        result = runner.invoke(smsc, args)
        assert result.exit_code == 0
        assert "Example" in result.output and "smsrelay smsc" in result.output


@pytest.mark.parametrize("args", [["--delivery-rate", "2"], ["--bind-timeout", "0"]])
def test_invalid_simulator_option_exits_2(args: list[str]) -> None:
    result = CliRunner().invoke(smsc, args)
    assert result.exit_code == 2


async def test_reply_command_posts_to_the_control_api(
    simulator: Simulator, make_connector: MakeConnector, inbox: Inbox
) -> None:
    await make_connector(simulator, inbox)
    control = f"http://127.0.0.1:{simulator.control_port}"
    args = ["reply", "--control", control, "--from", DESTINATION, "--to", SOURCE, "Oui merci"]
    result = await asyncio.to_thread(CliRunner().invoke, smsc, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"parts": 1, "statuses": [0]}
    await eventually(lambda: len(inbox.items) == 1)
    assert inbox.items[0].short_message == b"Oui merci"


def test_reply_command_reports_an_unreachable_simulator() -> None:
    args = ["reply", "--control", "http://127.0.0.1:9", "--from", "1", "--to", "2", "x"]
    result = CliRunner().invoke(smsc, args)
    assert result.exit_code == 1


def test_the_simulator_stops_cleanly_on_sigterm() -> None:
    # A supervisor's stop ended it by the signal (exit 143), its links not closed.
    command = str(Path(sys.executable).parent / "smsrelay")
    args = [command, "smsc", "--port", "0", "--control-port", "0"]
    with subprocess.Popen(args, stderr=subprocess.PIPE, text=True) as smsc:
        try:
            assert smsc.stderr is not None
            assert "listening on" in smsc.stderr.readline()  # blocks until it is up
            smsc.send_signal(signal.SIGTERM)
            assert smsc.wait(timeout=10) == 0
        finally:
            smsc.kill()
