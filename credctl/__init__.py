"""credctl: short-lived cloud credentials from a device-bound key."""

__version__ = "0.1.0"
