"""Suite 2: the delivery fault matrix, the real process against the fake capture server.

Single cases live in tests/integration/test_delivery.py; here every retryable status meets every
kind of Retry-After (seconds, fraction, HTTP date, huge, year 9999, negative, past, garbage,
inf, nan, empty), and 400/413/401/403, hangs, resets and a dead host are played as matrices.
Each scenario checks the counts (requests made, events delivered, events dropped and why), that
nothing is sent again that must not be, and that no retry came before what the server asked.
Delays are bounded only from below, from the server's own arrival times, so a slow machine
cannot fail them. `bench/reliability/fault_matrix.py` prints the same rows as a table.
"""

from __future__ import annotations

import time
from pathlib import Path

from fault_scenarios import (
    BODY_CAP,
    RETRY_AFTER_MAX_S,
    RETRY_AFTERS,
    RETRYABLE,
    DownRow,
    Row,
    run_auth,
    run_connection,
    run_down_closed_port,
    run_down_hangup,
    run_other_statuses,
    run_poison,
    run_sizes,
    run_status_matrix,
    split_requests,
)
from fm_support import EndlessAnswer

from sidecar_dev.driver import SidecarProcess
from sidecar_dev.harness import (
    FAST_RETRIES,
    TEST_KEY,
    numbered_event,
    proc_status_kib,
    wait_drained,
)


def check_row(row: Row) -> None:
    """The scenario did what its expectations say, and broke none of the delivery rules."""
    want = row.expect
    where = f"{row.scenario}: {row.statuses} gaps={row.gaps} floors={row.floors}"
    if want.expect_requests is not None:
        assert row.requests == want.expect_requests, where
    if want.expect_delivered is not None:
        assert row.delivered == want.expect_delivered, where
    assert row.dropped == want.expect_dropped, where
    assert row.duplicates == want.expect_duplicates, where
    assert row.resent_after_2xx == want.expect_resent_after_2xx, where
    assert row.resent_after_drop == 0, where
    assert row.same_identity_on_retry, where
    assert row.floor_violations == [], where
    # Every event is accounted for: delivered, or dropped with a reason.
    assert row.delivered + sum(row.dropped.values()) == row.sent, where


def test_split_requests_counts_the_halving() -> None:
    """The expected request counts for 400 isolation follow the halving rule."""
    assert split_requests([False] * 8) == 1
    assert split_requests([True]) == 1
    assert split_requests([True] + [False] * 7) == 7  # 8, 4+4, 2+2, 1+1
    assert split_requests([True, True]) == 3


def test_retryable_statuses_times_retry_after_kinds(tmp_path: Path) -> None:
    """408/429/500/502/503/504 x 12 Retry-After kinds: retried once, delivered once, never
    sooner than the server asked, absurd values capped by --retry-after-max; then dropped after
    --max-retries."""
    rows = run_status_matrix(tmp_path)
    assert len(rows) == len(RETRYABLE) * (len(RETRY_AFTERS) + 1)
    for row in rows:
        check_row(row)
    capped = [r for r in rows if r.status_next_attempt_s is not None]
    assert len(capped) == 2 * len(RETRYABLE)  # huge seconds and year 9999, for each status
    for row in capped:
        # What the sidecar itself said it would wait, read while it waited: within the cap.
        assert row.status_next_attempt_s <= RETRY_AFTER_MAX_S, row.scenario
        assert row.asked_s == RETRY_AFTER_MAX_S
        assert row.min_gap_s is not None and row.min_gap_s >= RETRY_AFTER_MAX_S
    honoured = [r for r in rows if r.scenario.endswith("Retry-After seconds 1")]
    assert len(honoured) == len(RETRYABLE)
    assert all(r.min_gap_s is not None and r.min_gap_s >= 1.0 for r in honoured)
    exhausted = [r for r in rows if "every time" in r.scenario]
    assert [r.dropped for r in exhausted] == [{"retries_exhausted": 3}] * len(RETRYABLE)


def test_2xx_never_resent_and_odd_statuses_retried(tmp_path: Path) -> None:
    """Any 2xx (odd body, 201/202/204) deletes for good; 404/302/418/501/599 are retried."""
    rows = run_other_statuses(tmp_path)
    for row in rows:
        check_row(row)
    assert sum(r.requests for r in rows if r.group == "2xx") == 5


def test_400_isolates_exactly_the_poisoned_events(tmp_path: Path) -> None:
    """400 halving drops exactly the poisoned events, with the predicted number of requests,
    and never sends an isolated event again."""
    rows = run_poison(tmp_path)
    for row in rows:
        check_row(row)
    assert sum(r.dropped.get("rejected", 0) for r in rows) == 13


def test_413_mixed_sizes_drop_only_what_cannot_fit(tmp_path: Path) -> None:
    """413 halving against a 6 KB body cap delivers every event that fits alone, once, and
    drops only those too large alone."""
    rows = run_sizes(tmp_path)
    for row in rows:
        check_row(row)
    assert [r.dropped.get("rejected", 0) for r in rows] == [2, 2, 1, 0]
    assert sum(r.delivered for r in rows) == 7 + 6 + 0 + 6
    assert BODY_CAP == 6_000


def test_401_403_hold_without_counting_retries(tmp_path: Path) -> None:
    """401 and 403 hold the events for --auth-hold each time and never drop them, even with
    --max-retries 0."""
    rows = run_auth(tmp_path)
    for row in rows:
        check_row(row)
        assert len(row.gaps) == 2


def test_hangs_resets_and_late_answers(tmp_path: Path) -> None:
    """Hangs time out and are retried, resets are retried, persistent failures are dropped
    after --max-retries, and an answer that comes after the timeout shows at-least-once
    delivery with the same uuids."""
    rows = run_connection(tmp_path)
    for row in rows:
        check_row(row)


def check_down(row: DownRow) -> None:
    """No tight loop: the count of attempts in the window is bounded by the backoff cap."""
    assert 2 <= row.attempts <= row.bound, row
    assert row.queued_after > 0, row


def test_host_that_hangs_up_is_not_hammered(tmp_path: Path) -> None:
    """A host that accepts and hangs up: attempts over 3 s stay within 3/0.1 + slack, each at
    least backoff-max/2 apart, while new events keep arriving."""
    row = run_down_hangup(tmp_path)
    check_down(row)
    assert row.min_gap_s >= row.floor_s, row


def test_offline_host_is_not_hammered_then_recovers(tmp_path: Path) -> None:
    """A refused port: failed connects over 3 s stay within 3/0.1 + slack while new events keep
    arriving; once it listens, everything queued is delivered."""
    row = run_down_closed_port(tmp_path)
    check_down(row)
    assert row.delivered_after_recovery is not None
    assert row.delivered_after_recovery >= 3


def test_endless_answer_body_neither_fills_memory_nor_holds_the_sender(tmp_path: Path) -> None:
    """A host answering 200 with a body that never ends: each batch is sent once and counted
    delivered, and memory stays flat (the whole body used to be read: ~200 MB/s, for ever)."""
    server = EndlessAnswer()
    try:
        with SidecarProcess(tmp_path / "data", server.url, *FAST_RETRIES,
                        "--request-timeout", "1", api_key=TEST_KEY) as proc:
            proc.result("ping")
            base = proc_status_kib(proc.process.pid, "VmRSS")
            for batch in range(3):
                proc.result("ph_send_batch", {"batch": [numbered_event(batch, scenario="endless")]})
                wait_drained(proc)
            time.sleep(0.5)  # let any stray reading show in memory (not a timing assertion)
            after = proc_status_kib(proc.process.pid, "VmRSS")
            status = proc.result("ph_status")
            assert proc.stop() == 0, proc.stderr
    finally:
        server.close()
    assert server.requests == 3
    assert status["delivered"] == 3 and status["queued"] == 0
    if base is not None and after is not None:
        assert (after - base) < 32 * 1024, (base, after)
