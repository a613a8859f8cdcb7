"""HFL-Net on batches of crops: the predictor, batching with split-and-retry, the actor pool.
Imports ``common``, ``crop``, ``detect`` and ``hflpipe.model``; only ``actor_pool`` and
``predictor_actor`` import Ray.
"""
