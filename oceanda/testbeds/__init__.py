"""Data generators that produce what a user's real files look like.

``qg`` (two-layer quasi-geostrophic ocean, batched), ``torus`` (the paper's torus flow and drifters),
``lorenz96`` (filter validation). Import the submodule you need.
"""
