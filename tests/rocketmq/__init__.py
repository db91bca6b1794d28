"""Real Apache RocketMQ cluster, real clients and real captures for rmqsniff's tests."""
