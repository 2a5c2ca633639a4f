"""ExpLLM: the vision-language model, its decoding, training data and training."""

from engine.model.base import create_model, load_model

__all__ = ["create_model", "load_model"]
