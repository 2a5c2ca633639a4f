"""Chain of thought: rule tables, rendering, writers, verification, the loop."""
