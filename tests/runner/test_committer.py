"""The ordered committer: slot order whatever the arrival order, exactly N, near-duplicate drops,
and a restore after a crash that continues as if nothing had happened."""

from __future__ import annotations

from pathlib import Path

from factory.recipes import load_recipe
from factory.runner.build import Committer
from factory.runner.slot import SlotResult
from factory.stages.context import BuildContext, SlotDropped
from factory.store.db import Store
from factory.store.sample_row import SAMPLE_FIELDS


def _sample(slot: int, policy: str, transcript: str) -> dict:
    row = dict.fromkeys(SAMPLE_FIELDS)
    row.update(slot=slot, sample_id=f"s{slot}", policy=policy, transcript=transcript, label="PASS")
    return row


def _text(i: int) -> str:
    return " ".join(f"w{i}x{k}" for k in range(300))


def _ctx(db: Path) -> BuildContext:
    return BuildContext(
        store=Store(db), client=None, banks=None, recipe=load_recipe("smoke"), seed=0, endpoints={}
    )  # type: ignore[arg-type]


def _committed(store: Store) -> list[tuple]:
    store.flush()
    return store.query("SELECT slot, status, reason FROM slot_status ORDER BY slot")


def test_commits_in_slot_order_and_stops_at_n(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path / "a.duckdb")
    c = Committer(ctx, n_target=3)
    c.offer(SlotResult(slot=2, sample=_sample(2, _text(2), _text(102))))
    c.offer(SlotResult(slot=1, drop=SlotDropped("filter", "ambiguous_label", "max 9")))
    assert c.cursor == 0 and c.accepted == 0  # nothing before slot 0 has arrived
    c.offer(SlotResult(slot=0, sample=_sample(0, _text(0), _text(100))))
    assert (c.cursor, c.accepted, c.dropped) == (3, 2, {"ambiguous_label": 1})
    c.offer(SlotResult(slot=4, sample=_sample(4, _text(4), _text(104))))
    c.offer(SlotResult(slot=3, sample=_sample(3, _text(3), _text(103))))
    assert c.done and c.accepted == 3 and c.cursor == 4  # slot 4 is never committed
    assert _committed(ctx.store) == [
        (0, "accepted", ""),
        (1, "dropped", "ambiguous_label"),
        (2, "accepted", ""),
        (3, "accepted", ""),
    ]
    ctx.store.close()


def test_near_duplicates_are_dropped_at_commit(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path / "b.duckdb")
    c = Committer(ctx, n_target=10)
    c.offer(SlotResult(slot=0, sample=_sample(0, _text(0), _text(100))))
    c.offer(SlotResult(slot=1, sample=_sample(1, _text(0).upper(), _text(101))))  # same policy
    c.offer(SlotResult(slot=2, sample=_sample(2, _text(2), _text(100) + " ok")))  # near-same dialogue
    assert c.dropped == {"duplicate_policy": 1, "duplicate_dialogue": 1} and c.accepted == 1
    ctx.store.flush()
    details = ctx.store.query("SELECT slot, reason, detail FROM filter_log WHERE dropped ORDER BY slot")
    assert details == [
        (1, "duplicate_policy", "exact duplicate of an accepted sample"),
        (2, "duplicate_dialogue", "near duplicate of an accepted sample"),
    ]
    ctx.store.close()


def test_restore_after_a_crash_continues_with_the_same_state(tmp_path: Path) -> None:
    db = tmp_path / "c.duckdb"
    ctx = _ctx(db)
    c = Committer(ctx, n_target=5)
    for slot in range(3):
        c.offer(SlotResult(slot=slot, sample=_sample(slot, _text(slot), _text(100 + slot))))
    c.offer(SlotResult(slot=3, drop=SlotDropped("filter", "malformed_dialogue", "empty")))
    ctx.store.close()

    ctx2 = _ctx(db)
    r = Committer(ctx2, n_target=5)
    r.restore()
    assert (r.cursor, r.accepted, r.dropped) == (4, 3, {"malformed_dialogue": 1})
    # the dedup index came back too: a copy of slot 1's policy is still a duplicate
    r.offer(SlotResult(slot=4, sample=_sample(4, _text(1), _text(104))))
    assert r.dropped == {"malformed_dialogue": 1, "duplicate_policy": 1}
    r.offer(SlotResult(slot=5, sample=_sample(5, _text(5), _text(105))))
    assert r.accepted == 4 and r.cursor == 6
    ctx2.store.close()


def test_restore_rebuilds_a_lost_or_stale_index_file_from_the_samples(tmp_path: Path) -> None:
    """The index file next to the database is not the source of truth: deleted, or holding slots
    the store never committed (a crash lost the last batch of rows), it is rebuilt or cut back."""
    db = tmp_path / "d.duckdb"
    ctx = _ctx(db)
    c = Committer(ctx, n_target=10)
    for slot in range(3):
        c.offer(SlotResult(slot=slot, sample=_sample(slot, _text(slot), _text(100 + slot))))
    ctx.store.flush()
    ctx.store._buffers.clear()  # slots 3 and 4 reach the index file but never the database
    for slot in (3, 4):
        c.offer(SlotResult(slot=slot, sample=_sample(slot, _text(slot), _text(100 + slot))))
    ctx.store._buffers.clear()
    ctx.store.close()
    for lose_file in (False, True):
        if lose_file:
            db.with_name(db.name + ".dedup").unlink()
        ctx2 = _ctx(db)
        r = Committer(ctx2, n_target=10)
        r.restore()
        assert (r.cursor, r.accepted) == (3, 3)
        r.offer(SlotResult(slot=3, sample=_sample(3, _text(3), _text(103))))  # not a duplicate now
        r.offer(SlotResult(slot=4, sample=_sample(4, _text(0), _text(999))))  # slot 0's policy is
        assert r.accepted == 4 and r.dropped == {"duplicate_policy": 1}
        ctx2.store._buffers.clear()  # leave the database as it was for the second round
        ctx2.store.close()
