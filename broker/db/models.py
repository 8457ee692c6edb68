"""Imports every table module so ``Base.metadata`` is complete (Alembic, tests)."""

from __future__ import annotations

from audit import models as audit_models
from broker.agencies import models as agency_models
from broker.agreements import models as agreement_models
from broker.breakglass import models as breakglass_models
from broker.consent import models as consent_models
from broker.db.base import Base
from broker.exchange import models as exchange_models
from broker.security import models as security_models
from broker.transparency import models as transparency_models

__all__ = [
    "Base",
    "agency_models",
    "agreement_models",
    "audit_models",
    "breakglass_models",
    "consent_models",
    "exchange_models",
    "security_models",
    "transparency_models",
]
