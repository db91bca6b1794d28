"""Sans-I/O protocol codecs for RocketMQ: bytes in, decoded events out.

Nothing in this package opens sockets or files, reads clocks or keeps global state.
"""
