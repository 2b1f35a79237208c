"""Tests mirror the source tree; fixtures give real Postgres, Redis, SMTP and a FHIR server."""
