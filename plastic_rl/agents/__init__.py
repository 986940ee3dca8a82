"""Stable-Baselines3 algorithms and policies with recurrent plastic networks."""
