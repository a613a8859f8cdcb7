"""HFL-Net on batches of crops: the predictor, batching with split-and-retry, the actor pool.

Imports ``common`` and ``hflpipe.model``; ``actor_pool`` is the one module here that imports Ray.
"""
