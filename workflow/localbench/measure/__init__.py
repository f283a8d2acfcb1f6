"""Measuring: the benchmark runner, its scenarios, timing, statistics, roofline,
hardware detection, device warm-up, energy and progress."""
