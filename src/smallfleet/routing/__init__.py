"""smallfleet.routing."""
