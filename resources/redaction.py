"""Secret redaction, applied before anything reaches disk, a log line or Dagster's event log.

Three nets, each exact, because evidence that hides its own verdicts is worthless to an auditor:

- by *value*: every secret this process resolved or registered, every value of the secrets file,
  and the password inside any of those that is a DSN, wherever it shows (an error message
  quoting a DSN, say), if it is at least ``MIN_SECRET_LENGTH`` characters long;
- by *key*: a string under a key that IS a secret's name (``SECRET_KEYS``), never under a key
  that merely contains one: ``passed``, ``token_count`` and ``smoke_password_ref`` (a reference,
  the name of a variable) are evidence. Booleans, numbers and None are never blanked: a secret
  is a string;
- by *shape*, in text: ``password=...`` and friends (a libpq DSN), a credential's name with its
  value (``smtp_pass=…``, ``"client_secret": "…"``, ``('database.secret', '…')``; the names of
  ``CREDENTIAL_NAMES`` and ``CREDENTIAL_SUFFIXES``), a URL's userinfo password, an Authorization
  header, a bearer token, the row PostgreSQL quotes in a constraint error and the key values it
  quotes in a unique or foreign-key violation.

Which of Odoo's columns hold credentials is listed here (``CREDENTIAL_NAMES``, ``CREDENTIAL_SUFFIXES``) for the
text net; ``promote_pipeline.odoo.credentials`` blanks exported rows by the same lists. The key net stays exact.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from resources import secrets

REDACTED = "[REDACTED]"

# The exact names of fields that hold a secret, compared case-insensitively with '-' read as '_'
# (HTTP headers: "Authorization", "Api-Key"). Exact, not a substring: a pattern like "pass" also
# matches "passed", which blanked every verdict of the evidence.
SECRET_KEYS = frozenset({"password", "passwd", "secret", "token", "api_key", "admin_passwd", "authorization"})

# Shorter values are not registered: they are too likely to be an ordinary word, a login or a
# number that also shows in unrelated text ("admin", "odoo", "5432"), and blanking each of their
# occurrences would blank logins, ports and verdicts; a secret that short is guessable anyway.
# Short secrets are still blanked by key and by shape (a password field, a DSN).
MIN_SECRET_LENGTH = 8

# Odoo's credential columns and config parameters beyond SECRET_KEYS (17 to 19): an exact list and the suffixes its
# modules use, compared by a name's last dotted part. ``promote_pipeline.odoo.credentials`` blanks exported rows by
# them; here they name a secret quoted in text (``smtp_pass=…`` in an error, ``('database.secret', '…')`` in SQL).
CREDENTIAL_NAMES = SECRET_KEYS | {
    "smtp_pass",  # ir_mail_server: the outgoing mail server's password
    "access_key",  # web_unsplash.access_key (a config parameter)
}
CREDENTIAL_SUFFIXES = (
    "_password", "_passwd",  # fetchmail and provider passwords
    "_secret",  # client_secret (OAuth, Gmail, Outlook), totp_secret, *_webhook_secret, razorpay_key_secret
    "_secret_key",  # stripe_secret_key, xendit_secret_key, flutterwave_secret_key
    "_api_key",  # adyen_api_key, mollie_api_key
    "_private_key",  # recaptcha_private_key, smtp_ssl_private_key
    "_hmac_key", "_signature_key",  # adyen_hmac_key, authorize_signature_key: they sign payment notifications
    "_token",  # account_token (IAP), access_token (portal links), refresh_token, signup_token, session_token
)
# Deliberately absent: "_key" alone (stripe_publishable_key is public, ir_config_parameter.key is a name),
# "_pass" alone, and any "*_ref" (a reference names a variable, it is not a secret).


def is_credential_name(name: str) -> bool:
    """A column, parameter or variable that holds a credential: an exact name, or one of the suffixes above."""
    last = name.strip().strip("\"'").lower().replace("-", "_").rsplit(".", 1)[-1]
    return last in CREDENTIAL_NAMES or last.endswith(CREDENTIAL_SUFFIXES)


_KEY_NAMES = "|".join(sorted(SECRET_KEYS - {"authorization"}, key=len, reverse=True))
# A key only when it stands alone: not the tail of a longer name ("smoke_password_ref=", "x-token:")
_STANDALONE = r"(?<![\w-])"
_QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""  # libpq and JSON quote with a backslash escape
_LIBPQ_PASSWORD = re.compile(_STANDALONE + r"password\s*=\s*(" + _QUOTED + r"|[^\s'\"]\S*)", re.IGNORECASE)
# scheme://user:password@host; the password stops at '/', '?' or '#', which a URL's userinfo encodes
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/\s@]*:)([^@\s/?#]+)(@)", re.IGNORECASE)

# ``name=value``, ``name: value`` or ``"name": "value"`` whose name is a credential's (``smtp_pass``,
# ``fetchmail_password``, ``PGPASSWORD``, ``client_secret``), and a ``('name', 'value')`` pair (SQL, a tuple)
_NAMED = re.compile(r"(?<![\w.-])([\"']?)([A-Za-z_][\w.-]*)(\1\s*[=:]\s*|\1\s*,\s*(?=['\"]))(" + _QUOTED
                    + r"|[^\s,;&)]+)")


def _named(match: re.Match[str]) -> str:
    name = match.group(2)
    if name.lower() == "authorization":  # its value is a scheme and a credential: the pattern below takes both
        return match.group(0)
    if match.group(3).strip().startswith(",") and not match.group(1):
        return match.group(0)  # a bare word before a comma is prose, not a (name, value) pair
    if is_credential_name(name) or name.lower().endswith(("password", "passwd")):
        return match.group(1) + name + match.group(3) + REDACTED
    return match.group(0)


_CONTENT_PATTERNS: list[tuple[re.Pattern[str], Any]] = [
    # PostgreSQL's constraint errors quote the whole row, whatever secret it holds; a value may hold a newline or a
    # parenthesis, so up to the text's last parenthesis (more may be blanked, never less)
    (re.compile(r"(Failing row contains )\(.*\)", re.IGNORECASE | re.DOTALL), r"\1(" + REDACTED + ")"),
    # ... and a unique or foreign-key violation quotes the key's values: "Key (col)=(value) already exists."
    (re.compile(r"(\bKey \((?:[^()]|\([^()]*\))*\)=\()(.*?)(\) (?:already exists|is not present|is still referenced))",
                re.DOTALL), r"\1" + REDACTED + r"\3"),
    (_NAMED, _named),
    (_URL_PASSWORD, r"\1" + REDACTED + r"\3"),
    # key=value (a libpq DSN, a config line) or "key": "value" (JSON quoted in a message)
    (re.compile(_STANDALONE + r"((?:" + _KEY_NAMES + r")[\"']?\s*[=:]\s*)(" + _QUOTED + r"|[^\s,;&]+)",
                re.IGNORECASE), r"\1" + REDACTED),
    (re.compile(_STANDALONE + r"(authorization[\"']?\s*[:=]\s*[\"']?)(\w+\s+)?[^\s,;\"']+", re.IGNORECASE),
     r"\1" + REDACTED),
    (re.compile(r"(\bbearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1" + REDACTED),
]

_registered: set[str] = set()
_public: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value this process has resolved, so that it is redacted wherever it shows."""
    if value:
        _registered.add(value)


def register_public(value: str | None) -> None:
    """Remember a value that is not a secret (a login), so that the value net never blanks it, even when some
    password equals it: such a password protects nothing, and blanking the login would hide who logged in."""
    if value:
        _public.add(value)


def resolve_secret(ref: str) -> str:
    """Resolve a secret reference and register its value for redaction."""
    value = secrets.resolve(ref)
    register_secret(value)
    return value


def _unquoted(libpq_value: str) -> str:
    if libpq_value[:1] in ("'", '"'):
        return re.sub(r"\\(.)", r"\1", libpq_value[1:-1])
    return libpq_value


@lru_cache(maxsize=256)
def _with_embedded_passwords(value: str) -> tuple[str, ...]:
    """The value and, if it is a DSN (libpq or URL), its password: ``pg_dump`` gets it alone, as PGPASSWORD."""
    embedded = [_unquoted(m.group(1)) for m in _LIBPQ_PASSWORD.finditer(value)]
    embedded += [m.group(2) for m in _URL_PASSWORD.finditer(value)]
    return (value, *embedded)


def _known_values() -> list[str]:
    values = {part for value in (*_registered, *secrets.known_values()) for part in _with_embedded_passwords(value)}
    return sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH and v not in _public), key=len, reverse=True)


def redact_text(text: str) -> str:
    for value in _known_values():
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern, repl in _CONTENT_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def is_secret_key(key: str) -> bool:
    """A field named exactly like a secret (``SECRET_KEYS``); a name that only contains one is not."""
    return key.strip().lower().replace("-", "_") in SECRET_KEYS


def redact(value: Any, key: str | None = None, *, secret: bool = False) -> Any:
    """A redacted deep copy of a JSON-like value. Under a secret key (``secret``), every non-empty string is
    blanked, however deep; an empty string, a boolean, a number or None says nothing secret and is kept."""
    secret = secret or (key is not None and is_secret_key(key))
    if isinstance(value, dict):
        return {k: redact(v, str(k), secret=secret) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, secret=secret) for v in value]
    if isinstance(value, str):
        return REDACTED if secret and value else redact_text(value)
    return value
