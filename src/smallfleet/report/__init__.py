"""smallfleet.report."""
