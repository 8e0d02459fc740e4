"""smallfleet.agents."""
