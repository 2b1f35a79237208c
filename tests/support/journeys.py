"""Journey files the tests write into a temporary OUTREACH_RULES_DIR."""

# Booking confirmation by email or SMS, then SMS reminders that take C / X replies.
SMS_REMINDERS = """
journey: sms-reminders
task_owner: Organization/front-desk
trigger:
  resource: Appointment
  on: [created, updated]
  when: "status = 'booked' and start > now()"
anchor: start
cancel_when: "status in ('cancelled' | 'noshow' | 'entered-in-error')"
replan_on_change: [start]
steps:
  - {id: booked, at: immediately, channel: [email, sms], template: appointment-booked,
     category: notification}
  - {id: reminder-72h, at: -72h, channel: [sms, email], template: appointment-reminder,
     replies: {C: confirm, X: cancel}}
  - {id: reminder-24h, at: -24h, channel: [sms, email], template: appointment-reminder,
     replies: {C: confirm, X: cancel}}
"""

# One SMS at booking, nothing else: for tests about sending itself.
SMS_NOW = """
journey: sms-now
trigger: {resource: Appointment, on: [created], when: "status = 'booked'"}
anchor: start
steps:
  - {id: booked, at: immediately, channel: [sms], template: appointment-booked,
     category: notification}
"""
