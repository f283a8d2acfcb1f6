"""The devices a config may ask for, and the error when the one asked for is not here.

Apart from :mod:`localbench.engine.device` so that code which never runs a model (the
Snakefile's parse, ``python -m localbench.report.locate``) can name them without
importing torch.
"""

from __future__ import annotations

DEVICE_REQUESTS = ("auto", "cuda", "mps", "cpu")


class DeviceUnavailable(RuntimeError):
    """The configured device does not exist on this machine."""
