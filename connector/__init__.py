"""Everything that speaks FHIR on the wire: client, validation, subscriptions, polling."""
