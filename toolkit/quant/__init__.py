"""Quantization of float models to Loihi 2 fixed point."""
