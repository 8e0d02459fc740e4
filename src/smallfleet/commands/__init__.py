"""The ``smallfleet`` CLI commands, one module per command group.

Each module imports only typer at the top and everything heavy inside its
command functions, so ``smallfleet --help`` stays fast. Each has
``register(app)``; :mod:`smallfleet.cli` lists them.
"""
