"""Semantic lookups: embedders, the nearest-row search, and threshold tuning."""
