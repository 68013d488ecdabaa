"""slimbench: a reproducible benchmark suite for neural-network compression."""

__version__ = "0.1.0"
