"""Adapters change a network, never a sampler (ARCHITECTURE.md, "Adapters"): LoRA
(`t2i.adapters.lora`) and learnt token embeddings (`t2i.adapters.embeddings`)."""
