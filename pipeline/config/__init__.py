"""Run options: the validated ``RunConfig`` and YAML job specs that fill it.

Imports only ``common``: configuration knows nothing of the stages downstream.
"""
