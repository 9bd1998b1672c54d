"""The running daemon: its wiring (main), the collector thread that reads the
kernel buffer, the writer thread that batches, the messages between them,
the --print printer, systemd notify and the service loop, logging."""
