"""Imports every table module so ``Base.metadata`` is complete (Alembic, tests)."""

from __future__ import annotations

from audit import models as audit_models
from broker.agencies import models as agency_models
from broker.agreements import models as agreement_models
from broker.breakglass import models as breakglass_models
from broker.cluster import models as cluster_models
from broker.consent import models as consent_models
from broker.db.base import Base
from broker.exchange import models as exchange_models
from broker.information_duties import models as information_duty_models
from broker.publications import models as publication_models
from broker.retention import models as retention_models
from broker.review import models as review_models
from broker.security import models as security_models
from broker.signals import models as signal_models
from broker.transparency import models as transparency_models

__all__ = [
    "Base",
    "agency_models",
    "agreement_models",
    "audit_models",
    "breakglass_models",
    "cluster_models",
    "consent_models",
    "exchange_models",
    "information_duty_models",
    "publication_models",
    "retention_models",
    "review_models",
    "security_models",
    "signal_models",
    "transparency_models",
]
