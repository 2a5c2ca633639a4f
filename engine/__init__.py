"""expllm engine: pure stages that turn labelled faces into AU-grounded chain-of-thought records.

Stages (each a module with typed inputs and outputs, no orchestration):
``datasets`` -> ``images``/``faces`` -> ``aus`` -> ``rules`` -> ``render`` -> ``verify``
-> ``shards``.
"""

__version__ = "0.1.0"
