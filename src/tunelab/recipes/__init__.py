"""Recipes: the entry points that wire config, data, model, method and engine together."""
