"""Orchestration: one video start to finish, the run over Ray, progress, job submission.

May import every stage; with ``infer.actor_pool`` the only place that imports Ray.
"""
