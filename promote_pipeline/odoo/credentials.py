"""Which of Odoo's columns and config parameters hold credentials: blanked wherever rows are exported.

An explicit list, not a pattern: a pattern loose enough to catch ``smtp_pass`` also catches
``passed``. Names are compared exactly; a dotted config parameter (``database.secret``) by its
last part.
"""

from __future__ import annotations

# One list, in the redaction module (which also finds these names in text): exact names, and the suffixes Odoo's
# modules use for credentials.
from resources.redaction import CREDENTIAL_NAMES, CREDENTIAL_SUFFIXES, is_credential_name

__all__ = ["CREDENTIAL_NAMES", "CREDENTIAL_SUFFIXES", "is_credential"]


def is_credential(name: str) -> bool:
    """A column or config parameter that holds a credential: an exact name, or one of the suffixes."""
    return is_credential_name(name)
