"""Support code shared by the tests: traffic generators, wire builders, capture makers and
helpers.  Test modules import from here, never from one another; nothing here is collected
as a test.  The real-cluster harness is ``tests/rocketmq/``."""
