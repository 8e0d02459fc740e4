"""smallfleet.store."""
