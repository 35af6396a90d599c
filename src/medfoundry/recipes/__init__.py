"""Recipes: one readable ``run(...)`` per job, built from the components."""
