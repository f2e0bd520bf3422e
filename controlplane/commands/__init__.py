"""The operator commands of ``edgefleet``: everything they do goes through the control plane's
REST API (``controlplane.client``), so they run anywhere the API can be reached.

``session`` holds login, credentials, the global options and the exit codes; ``fleet`` devices
and enrollment; ``models`` and ``artifacts`` models, workflows and threshold sets; ``admin``
the audit log, tokens and policies. These modules import only typer at load time.
"""
