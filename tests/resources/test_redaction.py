"""Redaction by key and by content, as pure logic."""

from __future__ import annotations

from resources.redaction import REDACTED, redact, redact_text, register_secret


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
