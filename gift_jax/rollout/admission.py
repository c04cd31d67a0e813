"""Admitting request rows into slots: their pages, the prompt pages they share, the insert batch.

Prefix sharing. A row's cache starts with its prompt's prefix (all but the last prompt token, which its
first decode step feeds). The prefix's whole pages are the same for every sample of the prompt, so on
each device they are written once and listed by every row of that prompt (`PagePool.share`), across
insert rounds; the prefix's last, partial page is copy-on-write: each row writes its first generated
tokens into it, so each row gets its own page, copied from a *template* page the prompt keeps on that
device. A prompt is therefore prefilled once per device it runs on, however many rounds its samples
are spread over. Its shared pages are held (by this cache) until none of its samples waits any more;
the pages themselves go free when the last row listing them stops.

New rows of a prompt go to a device that already holds its pages when one has a free slot (else to
the device with the most free slots, as `engine.spread_over_devices` does).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import jax
import numpy as np

from gift_jax.rollout.pages import PagePool
from gift_jax.rollout.programs import InsertBatch, prefix_width, row_bucket
from gift_jax.rollout.types import SamplingConfig


@dataclasses.dataclass
class Requests:
    """One call's request rows: prompts, samples per prompt, each prompt's budget, each row's base key."""

    prompts: Sequence[Sequence[int]]
    samples: int
    budgets: list[int]
    keys: jax.Array  # [R] row base keys

    def prompt_of(self, row: int) -> int:
        return row // self.samples

    def prefix(self, row: int) -> int:
        """Cache positions of the row's prompt prefix (its prompt but the last token)."""
        return len(self.prompts[self.prompt_of(row)]) - 1

    def positions(self, row: int) -> int:
        """Cache positions the row fills at most: its prefix, then one per decode step."""
        return self.prefix(row) + self.budgets[self.prompt_of(row)]


@dataclasses.dataclass
class _Shared:
    pages: list[int]  # the prefix's whole pages
    template: int | None  # a copy of its partial last page (None: the prefix ends on a page boundary)


class Admission:
    """Rows into slots with their pages (see the module docstring); one `batch()` per insert round."""

    def __init__(self, requests: Requests, pool: PagePool, config: SamplingConfig, slots: int, rows_bucket: int):
        self.requests, self.pool, self.config = requests, pool, config
        self.slots, self.rows_bucket = slots, rows_bucket
        self.shared: dict[tuple[int, int], _Shared] = {}  # (prompt, device) -> its pages there
        self.waiting = Counter(requests.prompt_of(r) for r in range(len(requests.prompts) * requests.samples))
        self.prefilled = 0  # prompts prefilled, over the whole call
        self._round()

    def _round(self):
        self.rows: list[int] = []
        self.targets: list[int] = []
        self.writes: list[tuple[int, int, list[int]]] = []  # (prompt, device, pages to write its prefix to)
        self.copies: list[tuple[int, int, int]] = []  # (device, template page, the row's page)

    def device_for(self, row: int, free: np.ndarray) -> int | None:
        """A free slot for `row`: on a device holding its prompt's pages if one has room, else None."""
        p = self.requests.prompt_of(row)
        for (prompt, device), _ in self.shared.items():
            if prompt == p:
                local = free.reshape(self.pool.devices, -1)[device]
                if local.any():
                    return device * local.size + int(np.argmax(local))
        return None

    def admit(self, row: int, slot: int, positions: int) -> bool:
        """Pages for `row` in the free `slot` up to `positions` cache positions (its prefix shared when
        the device holds it); False (and nothing held) when the device's pool is short."""
        p, device = self.requests.prompt_of(row), self.pool.device(slot)
        prefix, page_size = self.requests.prefix(row), self.pool.page_size
        whole = prefix // page_size
        shared = self.shared.get((p, device))
        if shared is not None:
            self.pool.share(slot, shared.pages)
            if not self.pool.grow(slot, positions):
                self.pool.release(slot)
                return False
            if shared.template is not None:
                self.copies.append((device, shared.template, int(self.pool.table[slot, whole])))
        else:
            if not self.pool.grow(slot, positions):
                return False
            template = None
            if prefix % page_size:
                template = self.pool.allocate(device)
                if template is None:
                    self.pool.release(slot)
                    return False
            pages = self.pool.table[slot, :whole].tolist()
            self.pool.retain(device, pages)
            self.shared[(p, device)] = _Shared(pages, template)
            self.writes.append((p, device, self.pool.table[slot].tolist()))  # the row's own pages
            if template is not None:  # and the template: the same prefix, its last page on its own
                self.writes.append((p, device, [*pages, template]))
        self.rows.append(row)
        self.targets.append(slot)
        self.waiting[p] -= 1
        return True

    def requeue(self, row: int) -> None:
        """A preempted row waits again (its prompt's pages are kept for it, if still held)."""
        self.waiting[self.requests.prompt_of(row)] += 1

    def batch(self) -> InsertBatch | None:
        """The round's insert (None when nothing was admitted); prompts none of whose rows wait any
        more give their shared pages back (the rows listing them keep them)."""
        if not self.rows:
            return None
        batch = self._insert_batch()
        self._round()
        for p, device in [key for key in self.shared if self.waiting[key[0]] == 0]:
            shared = self.shared.pop((p, device))
            self.pool.drop(device, shared.pages + ([shared.template] if shared.template is not None else []))
        return batch

    def _insert_batch(self) -> InsertBatch:
        """Host arrays, counts padded to buckets (few compilations), padding entries out of range."""
        r, config, pad_id = self.requests, self.config, self.config.pad_id
        unique = sorted({p for p, _, _ in self.writes})  # none: every new row shares pages already there
        self.prefilled += len(unique)
        position = {p: i for i, p in enumerate(unique)}
        width = prefix_width(config, max((len(r.prompts[p]) for p in unique), default=1))
        prefix_ids = np.full((row_bucket(max(len(unique), 1), config), width), pad_id, np.int32)
        prefix_mask = np.zeros_like(prefix_ids)
        for i, p in enumerate(unique):
            prefix = r.prompts[p][:-1]
            prefix_ids[i, : len(prefix)], prefix_mask[i, : len(prefix)] = prefix, 1
        width = self.pool.pages_per_slot
        writes = np.zeros((row_bucket(max(len(self.writes), 1), config), width), np.int32)
        for i, (_, _, pages) in enumerate(self.writes):
            writes[i, : len(pages)] = pages
        entries = len(writes)

        def column(values, fill, size):
            values = list(values)
            return np.array(values + [fill] * (size - len(values)), np.int32)

        copies = row_bucket(max(len(self.copies), 1), config)
        rows = row_bucket(len(self.rows), config)
        devices = self.pool.devices  # out of range: a padding entry, dropped
        return InsertBatch(
            prefix_ids=prefix_ids,
            prefix_mask=prefix_mask,
            write_source=column((position[p] for p, _, _ in self.writes), 0, entries),
            write_device=column((d for _, d, _ in self.writes), devices, entries),
            write_table=writes,
            write_length=column((len(r.prompts[p]) - 1 for p, _, _ in self.writes), 0, entries),
            copy_device=column((d for d, _, _ in self.copies), devices, copies),
            copy_source=column((s for _, s, _ in self.copies), 0, copies),
            copy_target=column((t for _, _, t in self.copies), 0, copies),
            slot=column(self.targets, self.slots, rows),
            length=column((r.prefix(row) for row in self.rows), 0, rows),
            last_token=column((r.prompts[r.prompt_of(row)][-1] for row in self.rows), pad_id, rows),
            keys=r.keys[column(self.rows, 0, rows)],
            row=column(self.rows, self.rows_bucket, rows),
            budget=column((r.budgets[r.prompt_of(row)] for row in self.rows), 0, rows),
        )
