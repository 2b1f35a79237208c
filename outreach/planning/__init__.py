"""Planning: what a journey makes of a change, written as enrollments and scheduled steps."""
