"""Loopwise shared library: event contract, Kafka runtime, settings, logging, metrics.

This package never imports a service; every service imports only this package,
its own package and third-party libraries.
"""

__version__ = "0.1.0"
