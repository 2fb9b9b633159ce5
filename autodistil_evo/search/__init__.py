"""Search trained SuperLMs without retraining: pymoo NSGA-II over (proxy loss, FLOPs, ...)."""
