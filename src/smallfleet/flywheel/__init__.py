"""smallfleet.flywheel."""
