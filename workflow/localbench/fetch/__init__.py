"""Fetching and building models: the Hub download (safetensors only), synthetic
checkpoints built from the real architectures, and what a checkpoint folder holds."""
