"""Orchestration: one video start to finish, the run over Ray, progress, job submission.
Imports ``config`` and every stage; with ``infer.actor_pool`` the only place that imports Ray.
"""
