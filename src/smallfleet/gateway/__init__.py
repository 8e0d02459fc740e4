"""smallfleet.gateway."""
