"""The service layer: settings, store, ingest, dispatch, worker, API and CLI around the core."""

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
# Shipped data that lives beside the packages (also installed into site-packages by the wheel).
SHIPPED_JOURNEYS = PACKAGE_ROOT.parent / "rules" / "journeys"
FIXTURES = PACKAGE_ROOT.parent / "fhir_fixtures"
