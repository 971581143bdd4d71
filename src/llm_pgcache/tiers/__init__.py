"""The copies above PostgreSQL: process memory (L1) and Redis (L2), joined by `upper`."""
