"""Redaction by value, by exact key and by shape, as pure logic."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from resources import redaction
from resources.redaction import (
    MIN_SECRET_LENGTH,
    REDACTED,
    is_secret_key,
    redact,
    redact_text,
    register_public,
    register_secret,
)

pytestmark = pytest.mark.unit  # pure logic: `make unit` (no PostgreSQL, no process)


@pytest.fixture
def fresh_values(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registered and public values of this test only: both are process-wide."""
    monkeypatch.setattr(redaction, "_registered", set())
    monkeypatch.setattr(redaction, "_public", set())
    yield


def test_keys_that_name_secrets_are_blanked_but_references_are_kept() -> None:
    got = redact({"password": "hunter22", "smoke_password_ref": "ODOO_PW", "api_key": "k" * 10,
                  "admin_passwd": "x" * 8, "nested": [{"token": "abc123"}], "name": "ok"})
    assert got == {"password": REDACTED, "smoke_password_ref": "ODOO_PW", "api_key": REDACTED,
                   "admin_passwd": REDACTED, "nested": [{"token": REDACTED}], "name": "ok"}


def test_secrets_inside_text_are_blanked() -> None:
    assert "s3cr3t" not in redact_text("postgresql://odoo:s3cr3t@db:5432/prod")
    assert "s3cr3t" not in redact_text("host=db user=odoo password=s3cr3t dbname=x")
    assert "abc.def" not in redact_text("Authorization: Bearer abc.def")
    register_secret("planted-value-91")
    assert redact_text("error: login planted-value-91 refused") == f"error: login {REDACTED} refused"


@pytest.mark.parametrize("key", ["password", "Password", "passwd", "secret", "token", "api_key", "Api-Key",
                                 "admin_passwd", "Authorization", "authorization"])
def test_exact_secret_keys(key: str) -> None:
    assert is_secret_key(key)
    assert redact({key: "some-value"}) == {key: REDACTED}


@pytest.mark.parametrize("key", ["pass", "passed", "passes", "password2", "passwords", "token_count", "tokens",
                                 "secret_ref", "smoke_password_ref", "db_dsn_ref", "ops_dsn_ref", "secrets_file",
                                 "bypass", "smtp_pass", "x_auth_token", "api_key_ref", "authorization_url"])
def test_keys_that_only_contain_a_secret_name_are_evidence(key: str) -> None:
    assert not is_secret_key(key)
    assert redact({key: "KEEP_ME"}) == {key: "KEEP_ME"}


def test_verdicts_are_never_blanked() -> None:
    evidence = {"passed": True, "triggered": False, "results": [{"name": "health_check", "passed": True,
                                                                 "detail": "HTTP 200, status pass"}]}
    assert redact(evidence) == evidence


def test_booleans_numbers_and_none_under_a_secret_key_are_kept() -> None:
    got = redact({"password": True, "token": 5, "secret": None, "api_key": 2.5, "passwd": ""})
    assert got == {"password": True, "token": 5, "secret": None, "api_key": 2.5, "passwd": ""}


def test_under_a_secret_key_every_string_is_blanked_however_deep() -> None:
    got = redact({"secret": {"value": "abc", "rotated": True, "history": ["old1", "old2", 3]},
                  "items": [{"name": "mail", "password": "pw"}, {"name": "imap", "password": None}],
                  "lists": [["x", {"token": ["t1", "t2"]}]]})
    assert got == {"secret": {"value": REDACTED, "rotated": True, "history": [REDACTED, REDACTED, 3]},
                   "items": [{"name": "mail", "password": REDACTED}, {"name": "imap", "password": None}],
                   "lists": [["x", {"token": [REDACTED, REDACTED]}]]}


@pytest.mark.parametrize("text, secret", [
    ("host=db user=odoo password=s3cr3t-pw dbname=x", "s3cr3t-pw"),
    ("host=db password='with space' dbname=x", "with space"),
    ("host=db password = 'it\\'s-quoted' dbname=x", "s-quoted"),
    ("postgresql://odoo:s3cr3t-pw@db:5432/prod", "s3cr3t-pw"),
    ("postgresql://:s3cr3t-pw@db/prod", "s3cr3t-pw"),
    ('failed: {"password": "s3cr3t-pw", "passed": false}', "s3cr3t-pw"),
    ("Authorization: Basic dXNlcjpzM2NyM3Q=", "dXNlcjpzM2NyM3Q="),
    ('{"Authorization": "Bearer abc.def"}', "abc.def"),
    ("token=abc123; secret: s3cr3t-pw", "s3cr3t-pw"),
    ("database.secret=s3cr3t-pw", "s3cr3t-pw"),
])
def test_secrets_by_shape(text: str, secret: str) -> None:
    assert secret not in redact_text(text)
    assert REDACTED in redact_text(text)


@pytest.mark.parametrize("text", [
    "passed: true", '"passed": true', "token_count: 5", "smoke_password_ref=ODOO_PW", "secret_ref: PROD_DSN",
    "http://host:8080/path?email=ops@example.com", "status pass", "x-auth-tokens: 3",
])
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact_text(text) == text


def test_a_dsn_registered_as_a_secret_also_blanks_its_password_alone(fresh_values: None) -> None:
    register_secret("host=db user=odoo password='pw-alone-77' dbname=x")
    register_secret("postgresql://odoo:url-pw-alone-77@db/prod")
    assert redact_text("PGPASSWORD is pw-alone-77, the URL's url-pw-alone-77") == \
        f"PGPASSWORD is {REDACTED}, the URL's {REDACTED}"


def test_short_values_are_not_blanked_wherever_they_show(fresh_values: None) -> None:
    short, long = "a" * (MIN_SECRET_LENGTH - 1), "b" * MIN_SECRET_LENGTH
    register_secret("admin")
    register_secret(short)
    register_secret(long)
    assert redact_text(f"login 'admin' ok; {short}; {long}") == f"login 'admin' ok; {short}; {REDACTED}"
    assert redact({"password": "admin"}) == {"password": REDACTED}  # by key, whatever its length


def test_a_login_is_not_blanked_because_a_password_equals_it(fresh_values: None) -> None:
    register_secret("odoo-admin-2024")
    assert redact_text("login 'odoo-admin-2024' ok") == f"login '{REDACTED}' ok"
    register_public("odoo-admin-2024")
    assert redact_text("login 'odoo-admin-2024' ok") == "login 'odoo-admin-2024' ok"
    assert redact({"login": "odoo-admin-2024", "password": "odoo-admin-2024"}) == \
        {"login": "odoo-admin-2024", "password": REDACTED}


# Each kind of secret the promoter can meet in a message, a log line or an error, with the secret it must hide.
@pytest.mark.parametrize("text, secret", [
    # Odoo's outgoing mail server password (ir_mail_server.smtp_pass), as text, JSON, a Python dict and SQL
    ("smtp_pass=mail-pw-0042 smtp_user=ops", "mail-pw-0042"),
    ('{"smtp_pass": "mail-pw-0042", "smtp_host": "smtp.example.com"}', "mail-pw-0042"),
    ("{'smtp_pass': 'mail pw 0042'}", "mail pw 0042"),
    ("UPDATE ir_mail_server SET smtp_pass = 'mail-pw-0042' WHERE id = 1", "mail-pw-0042"),
    # fetchmail's incoming server password (fetchmail.server.password, and *_password columns)
    ("fetchmail.server password=imap-pw-0042", "imap-pw-0042"),
    ("fetchmail_password: imap-pw-0042", "imap-pw-0042"),
    ('"password": "imap pw 0042"', "imap pw 0042"),
    # the database's secret (ir_config_parameter database.secret): as key=value and as a (key, value) pair
    ("database.secret=db-secret-0042", "db-secret-0042"),
    ("database.secret: db-secret-0042", "db-secret-0042"),
    ("INSERT INTO ir_config_parameter (key, value) VALUES ('database.secret', 'db-secret-0042')", "db-secret-0042"),
    # PostgreSQL quoting a row, across lines, or a key's values
    ('new row for relation "ir_mail_server" violates check constraint "c"\nDETAIL:  Failing row contains'
     " (1, smtp.example.com, ops, mail-pw-0042, t).", "mail-pw-0042"),
    ("DETAIL:  Failing row contains (1, line one\nmail-pw-0042 (kept?), t).", "mail-pw-0042"),
    ('DETAIL:  Key (smtp_pass)=(mail-pw-0042) already exists.', "mail-pw-0042"),
    ('DETAIL:  Key (a, b)=(x, y-0042) is not present in table "t".', "y-0042"),
    # secret=, token=, api_key= in text: bare, in a query string, spaced, upper case, quoted with an escape
    ("secret=s3cr3t-0042 next", "s3cr3t-0042"),
    ("GET /hook?token=tok-0042&page=2", "tok-0042"),
    ("API_KEY = key-0042", "key-0042"),
    ("api_key='it\\'s-0042'", "s-0042"),
    ('token: "tok 0042"', "tok 0042"),
    ("secret=\"two words-0042\"", "two words-0042"),
    # Odoo credential names by suffix, and a libpq variable
    ("client_secret=oauth-0042", "oauth-0042"),
    ("totp_secret: totp-0042", "totp-0042"),
    ("access_token=portal-0042", "portal-0042"),
    ("stripe_secret_key=sk-0042", "sk-0042"),
    ("PGPASSWORD=pg-0042 pg_dump", "pg-0042"),
])
def test_each_kind_of_secret_is_hidden(text: str, secret: str) -> None:
    got = redact_text(text)
    assert secret not in got, got
    assert REDACTED in got


@pytest.mark.parametrize("text", [
    "stripe_publishable_key=pk_live_public", "('web.base.url', 'http://example.com')", "names ('login', 'smtp_user')",
    "columns login, password, smtp_pass", "at 10:35:20 UTC", "smtp_user=ops smtp_host=smtp.example.com",
    "api_key_ref=ADYEN_KEY", "token_count=5",
])
def test_names_and_neighbours_of_secrets_are_kept(text: str) -> None:
    assert redact_text(text) == text


def test_the_text_net_and_odoos_export_share_one_list_of_credential_names() -> None:
    from promote_pipeline.odoo.credentials import is_credential

    for name in ("smtp_pass", "database.secret", "fetchmail_password", "client_secret", "access_token"):
        assert is_credential(name) and redaction.is_credential_name(name)
        assert REDACTED in redact_text(f"{name}=value-0042")
