"""LarPO: LLM alignment as retriever optimization."""

__version__ = "0.1.0"
