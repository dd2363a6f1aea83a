"""labbot's pipeline: taxonomy validation, synthetic data generation and model building."""

__version__ = "0.1.0"
