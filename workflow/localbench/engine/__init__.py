"""The inference engine: opening a model on a device, and the backends that run it
(eager transformers generate(), and the project's fast decoder)."""
