"""smallfleet.evals."""
