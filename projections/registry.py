"""Every read model the service keeps, by name."""

from __future__ import annotations

from typing import Any

from projections.audit_log import AuditLog
from projections.base import LedgerProjection
from projections.sessions import Sessions
from projections.users import Users

PROJECTIONS: list[type[LedgerProjection[Any]]] = [AuditLog, Users, Sessions]
