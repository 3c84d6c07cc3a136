"""Operator commands: the ``pipelines`` CLI, the pull-request plan check, Helm values filling."""
