"""Power loss: the real sidecar on `lazyfs.py`, SIGKILL and a cut at seeded points (CI scale).

The rounds are `powerloss_rounds.run_rounds`: one backing folder cut again and again, the app's
view (answers on stdout) against what plain sqlite3 finds after each cut. `POWERLOSS_ROUNDS`
(default 6) and `POWERLOSS_SEED` (default 12) change the scale and the choices;
`bench/reliability/powerloss.py` runs the published scale at each durability level.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from powerloss_rounds import PowerLossReport, run_rounds

ROUNDS = int(os.environ.get("POWERLOSS_ROUNDS", "6"))
SEED = int(os.environ.get("POWERLOSS_SEED", "12"))


@pytest.fixture(scope="module")
def default_run(fuse: None, tmp_path_factory: pytest.TempPathFactory) -> PowerLossReport:
    """The rounds with the sidecar's default durability, run once for the tests below."""
    return run_rounds(ROUNDS, SEED, tmp_path_factory.mktemp("powerloss"))


def test_rounds_acknowledge_events_before_their_cuts(default_run: PowerLossReport) -> None:
    """The rounds test something: every kill planned after some answers came after events were
    acknowledged, and the file system served syncs (counted per call for the benchmark)."""
    planned = [r for r in default_run.rounds if r.kill_after > 0]
    assert planned
    assert [r.index for r in planned if not r.events_acknowledged] == []
    assert default_run.syncs > 0


def test_every_database_passes_quick_check_after_a_cut(default_run: PowerLossReport) -> None:
    """Whatever a cut drops, the database left in the backing folder passes `quick_check`."""
    assert [(r.index, r.check) for r in default_run.bad_checks] == []


def test_no_acknowledged_event_is_lost_to_a_power_cut(default_run: PowerLossReport) -> None:
    """Every event whose `ph_send_batch` was answered before the power went is still queued."""
    lost_by_round = {r.index: r.lost_now for r in default_run.rounds if r.lost_now}
    assert (len(default_run.lost), lost_by_round) == (0, {})


def test_normal_durability_keeps_the_database_sound(fuse: None, tmp_path: Path) -> None:
    """`--durability normal` trades the last acknowledgements for speed, never the database:
    after every cut it passes `quick_check`, and it syncs less than `full` per call."""
    report = run_rounds(ROUNDS, SEED, tmp_path, durability="normal")
    assert report.acknowledged
    assert [(r.index, r.check) for r in report.bad_checks] == []
    print(f"durability normal: {len(report.lost)} of {len(report.acknowledged)} acknowledged "
          f"events lost over {ROUNDS} cuts, {report.syncs_per_call:.2f} syncs per call")


def test_full_durability_syncs_at_most_once_per_call(default_run: PowerLossReport) -> None:
    """Group commit: lines that wait for the store together share one sync of the log, so the
    log is synced no more often than calls are acknowledged."""
    wal_syncs = sum(n for name, n in default_run.syncs_by_file().items() if name.endswith("-wal"))
    assert 0 < wal_syncs <= default_run.calls_acknowledged + len(default_run.rounds)


def test_sigkill_alone_loses_nothing(fuse: None, tmp_path: Path) -> None:
    """The control: the same rounds without the cut lose no acknowledged event, so the losses
    counted above are the power cut's and not the counting's."""
    report = run_rounds(2, SEED, tmp_path, cut=False)
    assert report.acknowledged
    assert (sorted(report.lost), report.bad_checks) == ([], [])
