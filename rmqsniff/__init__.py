"""rmqsniff: a packet-level traffic analyzer and replay tool for Apache RocketMQ."""

__version__ = "0.1.0"
