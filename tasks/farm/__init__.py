"""The device farm: transports (SSH, this machine), verified pushes, the device protocol,
host keys, probes and board setup."""
