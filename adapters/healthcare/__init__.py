"""Healthcare adapter (GGZ, huisarts) over HL7 FHIR R4: see adapter.py and mapping.yaml."""

from adapters.healthcare.adapter import FhirAdapter, load_mapping

__all__ = ["FhirAdapter", "load_mapping"]
