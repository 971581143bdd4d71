"""Model prices, for the money a cache hit saves.

`DEFAULT_PRICES` are OpenAI's list prices in USD per million tokens (input, output) as
published in 2025, for the common chat models. They are defaults, not facts: prices
change and differ per contract, so pass your own table as `Cache.connect(prices=...)`.
A model name matches the longest key it starts with ("gpt-4o-mini-2024-07-18" is priced
as "gpt-4o-mini"); a model without a match saves tokens but no known money.
"""

from __future__ import annotations

from collections.abc import Mapping

Price = tuple[float, float]  # USD per 1M input tokens, per 1M output tokens

DEFAULT_PRICES: Mapping[str, Price] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o1": (15.00, 60.00),
    "o1-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
}


def price_of(model: str, prices: Mapping[str, Price]) -> Price | None:
    """The price of `model`: its own entry, else the longest key it starts with."""
    if model in prices:
        return prices[model]
    matches = [key for key in prices if model.startswith(key)]
    return prices[max(matches, key=len)] if matches else None


def cost(
    model: str, prompt_tokens: int, completion_tokens: int, prices: Mapping[str, Price]
) -> float | None:
    """USD that `model` charges for the tokens, or None if its price is unknown."""
    price = price_of(model, prices)
    if price is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000
