"""localbench: measure how fast local AI models run on this machine.

The Snakemake rules in ``rules/`` are thin; the work happens in this package,
one concept per module.
"""

__version__ = "0.1.0"
