"""The host's book of the paged KV cache: which pages each slot holds, which are free, on every device.

The pool of each device (the slots and pages are split over the mesh's batch axes in equal blocks)
numbers its pages `0 .. pages_per_device - 1`; page 0 is scratch (`models.paged_attention`), never
handed out. A slot's pages are listed in its row of `table` (`[S, pages_per_slot]`, local page ids,
0 where unused), in position order. The engine asks for pages before each decode call (a row about
to write past its last page gets the next one), gives them back when the row stops, and sends the
whole table with every call; every process of a multi-host run keeps the same book.

Pages are reference counted so that rows can share them (the pages of a prompt that several rows
start from: `share`), and a shared page is never written: a row only writes past its prompt's last
whole page.
"""

from __future__ import annotations

import numpy as np

from gift_jax.models.paged_attention import SCRATCH_PAGE


class PagePool:
    """Free pages and each slot's pages, per device (see the module docstring).

    devices: P, the blocks the slots and pages are split into. pages_per_device: pool size per device
    (scratch included). slots: S (a multiple of P). pages_per_slot: the table's width.
    """

    def __init__(self, *, devices: int, pages_per_device: int, slots: int, pages_per_slot: int, page_size: int):
        if slots % devices:
            raise ValueError(f"{slots} slots do not split over {devices} devices")
        if pages_per_device < 2:
            raise ValueError(f"a device's pool needs the scratch page and at least one more, got {pages_per_device}")
        self.devices, self.page_size, self.pages_per_slot = devices, page_size, pages_per_slot
        self.pages_per_device = pages_per_device
        self.slots_per_device = slots // devices
        self.table = np.full((slots, pages_per_slot), SCRATCH_PAGE, np.int32)
        self.held = np.zeros(slots, np.int32)  # pages listed in each slot's row
        self.refs = np.zeros((devices, pages_per_device), np.int32)
        self.refs[:, SCRATCH_PAGE] = 1  # never free
        self._free = [list(range(pages_per_device - 1, SCRATCH_PAGE, -1)) for _ in range(devices)]

    def device(self, slot: int) -> int:
        return slot // self.slots_per_device

    def free_pages(self, device: int) -> int:
        return len(self._free[device])

    def pages_for(self, tokens: int) -> int:
        return -(-tokens // self.page_size)

    def fits(self, slot: int, tokens: int) -> bool:
        """Whether `slot` can hold `tokens` positions with the device's free pages."""
        return self.pages_for(tokens) - self.held[slot] <= self.free_pages(self.device(slot))

    def grow(self, slot: int, tokens: int) -> bool:
        """Gives `slot` pages up to `tokens` positions; False (and nothing given) if they are not free."""
        if tokens > self.pages_per_slot * self.page_size:
            raise ValueError(f"slot {slot}: {tokens} positions exceed its {self.pages_per_slot} pages")
        if not self.fits(slot, tokens):
            return False
        device = self.device(slot)
        for index in range(self.held[slot], self.pages_for(tokens)):
            page = self._free[device].pop()
            self.refs[device, page] += 1
            self.table[slot, index] = page
        self.held[slot] = max(self.held[slot], self.pages_for(tokens))
        return True

    def share(self, slot: int, pages: list[int]) -> None:
        """Lists `pages` (of `slot`'s device, already held elsewhere) as the first pages of the empty `slot`."""
        assert self.held[slot] == 0, f"slot {slot} already holds pages"
        self.retain(self.device(slot), pages)
        self.table[slot, : len(pages)] = pages
        self.held[slot] = len(pages)

    def release(self, slot: int) -> None:
        """Takes back `slot`'s pages (each goes free when nothing else holds it); the row is scratch."""
        self.drop(self.device(slot), self.table[slot, : self.held[slot]].tolist())
        self.table[slot] = SCRATCH_PAGE
        self.held[slot] = 0

    def move(self, keep: np.ndarray) -> None:
        """The book after `decode_step.shrink(state, keep)`: new slot j is old slot `keep[j]` of its
        device (local indices), so its pages follow it; slots left behind must hold none."""
        old = self.slots_per_device
        new = len(keep) // self.devices
        source = keep + np.arange(len(keep)) // new * old  # global old slot of each new slot
        dropped = np.setdiff1d(np.arange(len(self.held)), source)
        assert not self.held[dropped].any(), "shrink would drop slots that hold pages"
        self.table, self.held, self.slots_per_device = self.table[source], self.held[source], new

    def allocate(self, device: int) -> int | None:
        """One free page of `device`, held once (by the caller), or None when none is free."""
        if not self._free[device]:
            return None
        page = self._free[device].pop()
        self.refs[device, page] += 1
        return page

    def retain(self, device: int, pages: list[int]) -> None:
        """One more holder of each of `pages` (e.g. the prompt-page cache, `admission`)."""
        for page in pages:
            self.refs[device, page] += 1

    def drop(self, device: int, pages: list[int]) -> None:
        """One holder fewer of each of `pages`; a page nobody holds goes free."""
        for page in pages:
            self.refs[device, page] -= 1
            if self.refs[device, page] == 0:
                self._free[device].append(int(page))
