"""Patient self-service: the preference page behind a signed link in a message."""
