"""The service layer, one package per stage of the data flow (docs/architecture.md): intake →
planning → sending → writeback, with replies and staff, over store, broker and core."""

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
# Shipped data that lives beside the packages (also installed into site-packages by the wheel).
SHIPPED_JOURNEYS = PACKAGE_ROOT.parent / "rules" / "journeys"
FIXTURES = PACKAGE_ROOT.parent / "fhir_fixtures"
