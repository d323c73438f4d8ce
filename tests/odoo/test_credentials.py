"""Which Odoo columns and config parameters are credentials: an exact list, no substring."""

from __future__ import annotations

import pytest

from promote_pipeline.odoo.credentials import is_credential


@pytest.mark.parametrize("name", [
    "password", "smtp_pass", "account_token", "access_token", "signup_token", "session_token", "client_secret",
    "totp_secret", "stripe_secret_key", "stripe_webhook_secret", "adyen_api_key", "adyen_hmac_key",
    "recaptcha_private_key", "api_key", "database.secret", "google_gmail_client_secret", "web_unsplash.access_key",
    "fetchmail_password",
])
def test_credentials(name: str) -> None:
    assert is_credential(name)


@pytest.mark.parametrize("name", [
    "login", "smtp_user", "user", "key", "stripe_publishable_key", "passed", "token_count", "smoke_password_ref",
    "db_dsn_ref", "secret_ref", "database.uuid", "web.base.url", "smtp_host", "state", "name", "bypass",
])
def test_not_credentials(name: str) -> None:
    assert not is_credential(name)
