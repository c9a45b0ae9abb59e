"""Services and locustfiles written the way users write them (not part of the harness)."""
