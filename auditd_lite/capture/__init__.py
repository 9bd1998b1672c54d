"""The kernel side: BTF offsets, the BPF program's loader, the raw record
layout and its decoder, the seed of running processes, and `doctor`. The
only package that imports bcc (docs/design.md, "The analysis side needs no bcc")."""
