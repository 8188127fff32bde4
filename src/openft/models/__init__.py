"""Hugging Face models as training and serving both load them (torch, transformers inside
functions only): `loading`."""
