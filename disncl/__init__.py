"""disncl: image–text retrieval that stays accurate when training pairs are noisy."""

__version__ = "0.1.0"
