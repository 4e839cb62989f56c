"""The CLI's Redis TLS settings and database from the environment (what ``kubectl requeue ...
--from`` hands over): read as given, refused with the variable named and never its value."""

from __future__ import annotations

import pytest

from requeue.commands.redis_env import ENV_CA, ENV_CERT, ENV_DB, ENV_INSECURE, ENV_KEY, connect_options
from requeue.errors import SpecInvalid

KEY = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n"


def test_nothing_set_is_no_tls_and_the_urls_database() -> None:
    assert connect_options({}) == {
        "tls_ca_pem": None,
        "tls_cert_pem": None,
        "tls_key_pem": None,
        "tls_insecure_skip_verify": False,
    }


def test_every_setting_is_passed_as_given() -> None:
    env = {ENV_CA: "CA PEM", ENV_CERT: "CERT PEM", ENV_KEY: KEY, ENV_INSECURE: "true", ENV_DB: "7"}
    assert connect_options(env) == {
        "tls_ca_pem": "CA PEM",
        "tls_cert_pem": "CERT PEM",
        "tls_key_pem": KEY,
        "tls_insecure_skip_verify": True,
        "db": 7,
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({ENV_KEY: KEY}, f"{ENV_CERT} and {ENV_KEY} go together: a client certificate needs its key"),
        ({ENV_CERT: "CERT PEM"}, f"{ENV_CERT} and {ENV_KEY} go together: a client certificate needs its key"),
        ({ENV_DB: "1024"}, f"{ENV_DB} must be a database number from 0 to 1023"),
        ({ENV_DB: "٣"}, f"{ENV_DB} must be a database number from 0 to 1023"),
        ({ENV_DB: "9" * 100_000}, f"{ENV_DB} must be a database number from 0 to 1023"),
    ],
)
def test_refusals_name_the_variable_not_the_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(SpecInvalid) as caught:
        connect_options(env)
    assert caught.value.message == message
    assert KEY not in str(caught.value) and "CERT PEM" not in str(caught.value)
