"""Where a run writes its results: ``results/<profile>``.

The workflow names the profile at parse time (:func:`run_profile`). ``make report``
needs the same folder before Snakemake runs, to name the HTML report
``results/<profile>/report.html``: ``python -m localbench.report.locate [key=value ...]``
prints the folder of a run with those ``--config`` words, reading ``config.yaml`` and
the words as Snakemake does and checking them as the workflow does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from snakemake.cli import parse_config
from snakemake.utils import update_config, validate

from localbench.config import SCHEMA_PATH, ConfigError, check_config
from localbench.config_files import check_config_file
from localbench.engine.device_choice import DeviceUnavailable
from localbench.measure.hardware_cache import detected, run_profile_name

RESULTS_ROOT = "results"


def run_profile(config: dict) -> str:
    """The profile of a run with ``config`` (checked, defaults filled): the configured
    one, else the one detected from the hardware, with ``-tiny`` for tiny models so that
    smoke runs never mix with real results. :class:`DeviceUnavailable` when the
    configured device is not there."""
    if config.get("profile"):
        return config["profile"]
    return run_profile_name(detected(config["device"])["profile"], config["size"])


def run_config(words: list[str], configfile: str | Path = "config.yaml") -> dict:
    """``configfile`` updated with ``--config`` ``words``, checked, defaults filled."""
    config: dict = {}
    if Path(configfile).exists():
        check_config_file(configfile)
        config = yaml.safe_load(Path(configfile).read_text(encoding="utf-8")) or {}
    try:
        overrides = parse_config(words)
    except ValueError as error:
        raise ConfigError(f"invalid config: {' '.join(words)}: {error}") from None
    update_config(config, overrides)
    check_config(config)
    validate(config, schema=str(SCHEMA_PATH))
    return config


def main(argv: list[str]) -> int:
    """Print ``results/<profile>`` of a run with the ``--config`` words ``argv``."""
    try:
        profile = run_profile(run_config(argv))
    except (ConfigError, DeviceUnavailable) as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{RESULTS_ROOT}/{profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
