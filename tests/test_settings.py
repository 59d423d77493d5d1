"""flag > SMSRELAY_* environment > TOML file > default; unknown keys are errors."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

import pytest

from smsrelay.settings import SettingsError, load_settings, unknown_variables, url_host


def test_defaults() -> None:
    settings = load_settings({}, env={})
    assert (settings.host, settings.port, settings.data_dir) == ("127.0.0.1", 8080, "./data")
    assert settings.resolved_database_url == "sqlite:///data/smsrelay.db"
    assert settings.uses_builtin_smsc and settings.private_webhooks_allowed


def test_layers_override_in_order(tmp_path: Path) -> None:
    config = tmp_path / "smsrelay.toml"
    config.write_text('port = 9000\nhost = "0.0.0.0"\ndata_dir = "/srv/file"\n')
    env = {"SMSRELAY_CONFIG": str(config), "SMSRELAY_PORT": "9100"}
    settings = load_settings({"port": 9200, "host": None}, env=env)
    assert settings.port == 9200  # flag wins
    assert settings.host == "0.0.0.0"  # file, since neither flag nor env set it
    settings = load_settings({}, env=env)
    assert settings.port == 9100 and settings.data_dir == "/srv/file"


def test_connectors_and_prices_from_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'smsc = "smpp://id:pw@smsc.example.net:2775"\n'
        "[prices]\nfr = 0.05\n"
        '[connectors.orange]\nurl = "smpp://a:b@10.0.0.1:2775"\nwindow = 50\n'
    )
    settings = load_settings({"config": str(config)}, env={})
    assert settings.prices == {"FR": "0.05"}
    assert settings.connectors[0].name == "orange"
    assert settings.connectors[0].options == {"window": 50}
    assert not settings.uses_builtin_smsc and not settings.private_webhooks_allowed


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({}, {"SMSRELAY_PORT": "eighty"}, "invalid value for port"),
        ({"port": 70000}, {}, "port must be"),
        ({"database_url": "mysql://x"}, {}, "unsupported database URL"),
        ({"smsc": "http://x"}, {}, "smsc must be"),
        ({}, {"SMSRELAY_ALLOW_PRIVATE_WEBHOOKS": "perhaps"}, "allow_private_webhooks"),
        ({}, {"SMSRELAY_WEBHOOK_TLS_CA": "/nowhere/ca.pem"}, "webhook_tls_ca: no such file"),
        ({}, {"SMSRELAY_HTTP_TLS_CERT": "/nowhere/api.pem"}, "http_tls_cert: no such file"),
        ({}, {"SMSRELAY_HTTP_TLS_KEY": "/etc/hostname"}, "http_tls_key needs http_tls_cert"),
        ({}, {"SMSRELAY_HTTP_MAX_CONNECTIONS": "-1"}, "http_max_connections must be"),
        # each of these passed and failed later, in serve or a command, as a traceback
        ({}, {"SMSRELAY_LOG_LEVEL": "nope"}, "log_level must be one of"),
        ({}, {"SMSRELAY_FIXED_CLOCK": "notadate"}, "fixed_clock is not an ISO time"),
        ({}, {"SMSRELAY_DEMO_CREDIT_EUR": "abc"}, "demo_credit_eur is not an amount"),
        ({}, {"SMSRELAY_DEMO_API_KEY": "short"}, "demo_api_key must be 16 to 128"),
        ({}, {"SMSRELAY_DEMO_API_KEY": "has spaces in it, sixteen+"}, "demo_api_key must be"),
        ({}, {"SMSRELAY_BUILTIN_DELIVERY_RATE": "7"}, "builtin_delivery_rate must be"),
        ({}, {"SMSRELAY_LEASE_SECONDS": "-1"}, "lease_seconds must be"),
        ({"database_url": "sqlite:///"}, {}, "needs a path"),  # was an in-memory database
        # crashed at start (no such table) and left a ":memory:.serve-lock" file behind
        ({}, {"SMSRELAY_DATABASE_URL": "sqlite:///:memory:"}, "cannot be served"),
        # each of these was taken and quietly switched something off (the config review)
        ({}, {"SMSRELAY_STOP_KEYWORDS": ","}, "stop_keywords is empty"),  # STOP did nothing
        ({"host": " "}, {}, "host is empty"),  # listened on every interface
        ({}, {"SMSRELAY_WEBHOOK_CONCURRENCY_PER_HOST": "0"}, "webhook_concurrency_per_host"),
        ({}, {"SMSRELAY_WEBHOOK_TIMEOUT": "nan"}, "webhook_timeout must be a number"),
        ({}, {"SMSRELAY_WEBHOOK_GIVE_UP_AFTER": "-5"}, "webhook_give_up_after must be"),
        ({}, {"SMSRELAY_WEBHOOK_MAX_BACKOFF": "0.5"}, "at least webhook_first_retry"),
        ({}, {"SMSRELAY_LEASE_SECONDS": "nan"}, "lease_seconds must be"),
        ({}, {"SMSRELAY_BUILTIN_SMSC_PORT": "70000"}, "builtin_smsc_port must be 0-65535"),
        ({}, {"SMSRELAY_BUILTIN_RECEIPT_DELAY_MS": "-5"}, "builtin_receipt_delay_ms must be"),
        ({}, {"SMSRELAY_FIXED_CLOCK": "2026-03-02T10:00"}, "needs a UTC offset"),
        # a Python error about dictionary sequences (the newcomer review)
        ({}, {"SMSRELAY_PRICES": "FR=0.05"}, r"prices is a table of the settings file"),
        ({}, {"SMSRELAY_CONNECTORS": "x"}, r"connectors is a table of the settings file"),
        # taken and never used beyond the 1,000 parts a connector holds
        ({}, {"SMSRELAY_DISPATCH_BATCH": "1001"}, "dispatch_batch must be 1 to 1000"),
        ({}, {"SMSRELAY_DISPATCH_BATCH": "0"}, "dispatch_batch must be 1 to 1000"),
        ({}, {"SMSRELAY_SUBMIT_ATTEMPTS": "0"}, "submit_attempts must be at least 1"),
        (
            {},
            {"SMSRELAY_TRUSTED_PROXIES": "10.0.0.1, proxy.internal"},
            "invalid value for trusted_proxies: .*'proxy.internal' is not an IPv4 or IPv6",
        ),
        ({}, {"SMSRELAY_TRUSTED_PROXIES": "10.0.0.1/8"}, "'10.0.0.1/8' has host bits set"),
    ],
)
def test_invalid_values_are_refused(flags, env, message) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(flags, env=env)


@pytest.mark.parametrize("url", ["postgresql://sms@db.internal/sms", "postgres://h:5433/x"])
def test_a_postgresql_database_is_accepted(url: str) -> None:
    assert load_settings({}, env={"SMSRELAY_DATABASE_URL": url}).resolved_database_url == url


def test_unknown_file_keys_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("prot = 8080\n")
    with pytest.raises(SettingsError, match="unknown key"):
        load_settings({"config": str(config)}, env={})


def test_a_private_ca_for_https_callbacks_comes_from_the_environment(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load_settings({}, env={"SMSRELAY_WEBHOOK_TLS_CA": str(ca)})
    assert settings.webhook_tls_ca == str(ca)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port = true\n", r"invalid value for port: true \(int expected\)"),  # was port 1
        ("port = 0.9\n", "invalid value for port"),  # was port 0: any free port
        ('host = ["a"]\n', "invalid value for host"),  # was the host "['a']"
        ('port = "8080"\n', "invalid value for port: '8080' is text, a number is expected"),
        ('demo = "false"\n', "invalid value for demo: 'false' is text, true or false is"),
        ('[prices]\nFR = "abc"\n', "prices: not an amount: 'abc'"),
        ("[prices]\nFR = -1\n", "prices: price for FR must not be negative"),
        ("stop_keywords = []\n", "stop_keywords is empty"),
        ("trusted_proxies = 10\n", "trusted_proxies: 10 \\(a list of texts expected"),
        ('trusted_proxies = ["10.0.0.0/8", 1]\n', "trusted_proxies: .*a list of texts"),
        ('trusted_proxies = ["10.0.0.0/8", "x"]\n', "trusted_proxies: .*'x' is not an IPv4"),
        ("[prices]\nFR = 0.1\nfr = 0.2\n", "a region is priced twice"),
        ("[prices]\nUK = 0.05\n", "GB, not UK"),
        ('allow_private_webhooks = "yes"\n', "allow_private_webhooks: 'yes' is text"),
        (
            'smsc = "smpp://a:b@h:1"\n[connectors.default]\nurl = "smpp://c:d@h:2"\n',
            "smsc and \\[connectors.default\\] both set the default connector",
        ),
    ],
)
def test_file_values_of_the_wrong_type_or_unusable_are_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings({"config": str(config)}, env={})


def test_trusted_proxies_come_from_the_file_or_the_environment(tmp_path: Path) -> None:
    assert load_settings({}, env={}).trusted_proxies == ()  # no X-Forwarded-For believed
    config = tmp_path / "c.toml"
    config.write_text('trusted_proxies = ["10.0.0.0/8", "::1"]\n')
    from_file = load_settings({"config": str(config)}, env={}).trusted_proxies
    assert from_file == (ip_network("10.0.0.0/8"), ip_network("::1/128"))
    env = {"SMSRELAY_TRUSTED_PROXIES": "192.0.2.1, 2001:db8::/32"}
    from_env = load_settings({"config": str(config)}, env=env).trusted_proxies
    assert from_env == (ip_network("192.0.2.1/32"), ip_network("2001:db8::/32"))


def test_a_config_path_that_cannot_be_read_as_toml_is_a_settings_error(tmp_path: Path) -> None:
    latin = tmp_path / "latin.toml"
    latin.write_bytes('stop_mention = "caf\xe9"\n'.encode("latin-1"))
    for path, message in ((tmp_path, "cannot be read"), (latin, "not valid TOML")):
        with pytest.raises(SettingsError, match=message):
            load_settings({}, env={"SMSRELAY_CONFIG": str(path)})


def test_file_values_that_read_as_their_text_still_load(tmp_path: Path) -> None:
    # The type check first refused these, which had always loaded.
    config = tmp_path / "c.toml"
    config.write_text("demo_credit_eur = 100\nfixed_clock = 2026-12-06T21:30:00+01:00\nport = 0\n")
    settings = load_settings({"config": str(config)}, env={})
    assert (settings.demo_credit_eur, settings.port) == ("100", 0)
    assert settings.fixed_clock is not None and settings.fixed_clock.startswith("2026-12-06")


def test_a_default_connector_table_is_a_real_smsc_not_the_built_in_one(tmp_path: Path) -> None:
    # It bound the real SMSC, yet the gateway behaved as on the built-in simulator: /metrics
    # open to anyone and callbacks to private addresses allowed (the config review).
    config = tmp_path / "c.toml"
    config.write_text('[connectors.default]\nurl = "smpp://alpha:pw@10.0.0.1:2775"\n')
    settings = load_settings({"config": str(config)}, env={})
    assert not settings.uses_builtin_smsc and not settings.private_webhooks_allowed


def test_a_real_connector_beside_the_built_in_one_makes_a_real_gateway(tmp_path: Path) -> None:
    # the default connector on the simulator, numbers on a real carrier: /metrics answered
    # anyone and callbacks could reach private addresses (the metrics review)
    config = tmp_path / "c.toml"
    config.write_text('[connectors.orange]\nurl = "smpp://alpha:pw@10.0.0.1:2775"\n')
    settings = load_settings({"config": str(config)}, env={})
    assert settings.uses_builtin_smsc  # the default connector still binds the simulator
    assert not settings.is_stand_in and not settings.private_webhooks_allowed
    assert not settings.makes_demo  # its key, with credit, next to a real carrier
    assert load_settings({}, env={}).is_stand_in


def test_variables_that_name_no_setting_are_listed_with_their_likely_meaning() -> None:
    env = {"SMSRELAY_PORT": "1", "SMSRELAY_PROT": "2", "SMSRELAY_ZZZZZZ": "3", "PATH": "/bin"}
    env |= {"SMSRELAY_host": "0.0.0.0"}  # read only in capitals
    env |= {"SMSRELAY_API_KEY": "k"}  # `smsrelay send`'s key: a command's variable
    assert unknown_variables(env) == [
        "SMSRELAY_PROT (did you mean SMSRELAY_PORT?)",
        "SMSRELAY_ZZZZZZ",
        "SMSRELAY_host (did you mean SMSRELAY_HOST?)",
    ]


def test_the_demo_account_is_made_with_the_built_in_smsc_only_unless_set() -> None:
    real = {"SMSRELAY_SMSC": "smpp://id:pw@smsc.example.net:2775"}
    assert load_settings({}, env={}).makes_demo
    assert not load_settings({}, env=real).makes_demo
    assert load_settings({}, env={**real, "SMSRELAY_DEMO": "true"}).makes_demo
    assert not load_settings({}, env={"SMSRELAY_DEMO": "false"}).makes_demo


@pytest.mark.parametrize(
    ("host", "to_connect", "written"),
    [
        ("127.0.0.1", False, "127.0.0.1"),
        ("::1", False, "[::1]"),  # printed as http://:::8080, which reached nothing
        ("::", False, "[::]"),
        ("::", True, "[::1]"),  # smsrelay send reaches its own serve on loopback
        ("0.0.0.0", True, "127.0.0.1"),
        ("sms.example.net", True, "sms.example.net"),
    ],
)
def test_a_host_is_written_as_a_url_needs_it(host: str, to_connect: bool, written: str) -> None:
    assert url_host(host, to_connect=to_connect) == written


def test_a_data_dir_under_home_is_read_as_the_shell_would(monkeypatch: pytest.MonkeyPatch) -> None:
    # "~/sms" in a unit file or the TOML made a folder named "~" where serve ran.
    monkeypatch.setenv("HOME", "/home/sms")
    settings = load_settings({}, env={"SMSRELAY_DATA_DIR": "~/sms"})
    assert settings.resolved_database_url == "sqlite:////home/sms/sms/smsrelay.db"
