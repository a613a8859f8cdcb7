"""Orchestration: one video start to finish, the run over Ray, progress, job submission.
Imports ``config`` and every stage; with ``infer.actor_pool`` and ``infer.predictor_actor``
the only place that imports Ray.
"""
