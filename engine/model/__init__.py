"""ExpLLM: the vision-language model, its decoding, training data and training."""
