"""Run options: the validated ``RunConfig`` and the YAML job specs that fill it.
Imports only ``common``: configuration knows nothing of the stages downstream.
"""
