"""Guidance by a separate network trained on noisy samples: noise-aware classifiers and noisy
CLIPs (t2i/guides/guide.py), and what their outputs mean per task (t2i/guides/tasks.py)."""
