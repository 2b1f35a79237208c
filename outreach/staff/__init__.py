"""Staff: what people do and see — the admin actions (audited) and the SMART clinician view."""
