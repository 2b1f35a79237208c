"""Test support: the FHIR test server launcher and shared helpers."""
