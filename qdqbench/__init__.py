"""qdqbench: benchmark and accuracy validation for INT8 (Q/DQ) quantized BERT models."""

__version__ = "0.1.0"
