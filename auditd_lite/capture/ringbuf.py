"""The BPF ring buffer read straight from its mapping.

The map's layout is the kernel's ABI (kernel/bpf/ringbuf.c, the same since
5.8): a page holding the consumer position, writable by us; a page holding
the producer position; then the data pages, which the kernel offers twice in
a row so that a record wrapping round the end reads as one piece. We map
them once: the kernel's mapping is resident from the start, and a second
copy would count the whole buffer twice in the daemon's RSS; the rare
record that wraps is read in two pieces. Each record starts with an 8-byte
header (never split: sizes and positions are multiples of 8) whose first
word is its length, with a busy bit while the producer still writes it and
a discard bit when it was given up.

One slice per record and one consumer-position store per read: this
measured cheaper than a ctypes callback per record through libbpf's
ring_buffer__consume (docs/design.md, "The daemon never maps the compiler").
x86's loads are not reordered with other loads nor stores with stores, so
plain reads and writes of the positions give the acquire and release order
the kernel's side expects, provided each is one access of its whole width:
the positions and headers are read and written through native-format
memoryviews, one aligned 8- or 4-byte load or store each. struct's
explicit little-endian formats go byte by byte, and a consumer position
stored that way passes through values up to 16 MiB behind the real one on a
carry: a producer reading one then finds the buffer full and drops a record
(4 of 9 100,000-exec storms lost one that way before this).
"""

from __future__ import annotations

import mmap
import select

from . import libbpf
from ..errors import CannotCapture

BUSY = 1 << 31
DISCARD = 1 << 30
HDR_SIZE = 8



class RingReader:
    """``read(out)`` appends every committed record to ``out`` as bytes."""

    def __init__(self, map_fd: int):
        info = libbpf.map_info(map_fd)
        if info.type != libbpf.MAP_RINGBUF:
            raise CannotCapture(f"the map handed over as the ring buffer is of type {info.type}")
        size = info.max_entries
        page = mmap.PAGESIZE
        try:
            self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._data = mmap.mmap(map_fd, page + size, mmap.MAP_SHARED,
                                   mmap.PROT_READ, offset=page)
        except OSError as e:
            raise CannotCapture(f"could not map the ring buffer ({size} bytes): {e}") from None
        self._mask = size - 1
        self._limit = page + size
        self.wrapped = 0  # records read in two pieces: tests show the join is exercised
        # whole-width views: the consumer position, the producer position, the headers
        self._cons_q = memoryview(self._cons).cast("Q")
        self._prod_q = memoryview(self._data).cast("Q")
        self._head_i = memoryview(self._data).cast("I")
        self._pos = self._cons_q[0]
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    def wait(self, timeout_ms: int) -> None:
        """Until the kernel wakes us (records, or the program's forced wakeup) or the timeout."""
        try:
            self._epoll.poll(timeout_ms / 1000)
        except InterruptedError:
            pass

    def read(self, out: list) -> int:
        """Move every record committed so far into ``out``; returns how many."""
        data, mask, pos, limit = self._data, self._mask, self._pos, self._limit
        page = mmap.PAGESIZE
        end = self._prod_q[0]
        heads = self._head_i
        append = out.append
        n = 0
        while pos < end:
            at = page + (pos & mask)
            head = heads[at >> 2]  # 8-aligned: sizes and positions are multiples of 8
            if head & BUSY:
                break  # still being written: it and what follows wait for the next read
            length = head & ~(BUSY | DISCARD)
            if not head & DISCARD:
                at += HDR_SIZE
                stop = at + length
                if stop <= limit:
                    append(data[at:stop])
                else:
                    append(data[at:limit] + data[page:page + stop - limit])
                    self.wrapped += 1
                n += 1
            pos += (length + HDR_SIZE + 7) & ~7
        if pos != self._pos:
            self._pos = pos
            self._cons_q[0] = pos  # hands the space back to the producer
        return n

    def close(self) -> None:
        self._epoll.close()
        for view in (self._cons_q, self._prod_q, self._head_i):
            view.release()  # an mmap with views exported cannot be closed
        self._data.close()
        self._cons.close()
