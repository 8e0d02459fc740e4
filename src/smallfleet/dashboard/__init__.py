"""smallfleet.dashboard: the web page the gateway serves at ``/ui``.

Overview, workloads and task types, routes (with actions), traces, and the flywheel report.
"""

from smallfleet.dashboard.app import Dashboard, create_dashboard

__all__ = ["Dashboard", "create_dashboard"]
