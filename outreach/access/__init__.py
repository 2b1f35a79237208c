"""The access loop: new times offered by text to a patient who asks to reschedule, and times freed
by cancellations offered to the waitlist; the patient's answer books them in the EHR."""
