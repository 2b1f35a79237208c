"""Write-back: the outbox of FHIR resources for the EHR (Communications, CommunicationRequests,
Tasks, QuestionnaireResponses) and the delivery statuses that update them."""
