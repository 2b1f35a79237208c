"""Hot reload: edited journey files take effect without a restart; broken ones never do."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from outreach import SHIPPED_JOURNEYS
from outreach.core.journeys import ReloadingJourneySet


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    shutil.copy(SHIPPED_JOURNEYS / "appointment-reminders.yaml", tmp_path)
    return tmp_path


def _edit(file: Path, old: str, new: str) -> None:
    file.write_text(file.read_text().replace(old, new, 1))


def test_an_edit_is_picked_up_after_the_interval_with_a_new_version(rules_dir: Path) -> None:
    clock = FakeClock()
    journeys = ReloadingJourneySet(rules_dir, interval=3, clock=clock)
    before = journeys.by_name("appointment-reminders")
    assert before is not None
    _edit(rules_dir / "appointment-reminders.yaml", "at: -2h", "at: -3h")

    clock.now = 1
    assert journeys.by_name("appointment-reminders") is before  # not checked yet
    clock.now = 4
    after = journeys.by_name("appointment-reminders")

    assert after is not None and after.version != before.version
    assert [s.at for s in after.spec.steps][-1] == "-3h"


def test_a_broken_edit_keeps_the_old_set_and_logs_the_position(
    rules_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    journeys = ReloadingJourneySet(rules_dir, interval=3, clock=clock)
    before = journeys.by_name("appointment-reminders")
    _edit(rules_dir / "appointment-reminders.yaml", "at: -2h", "at: -2x")

    clock.now = 10
    with caplog.at_level(logging.ERROR):
        assert journeys.by_name("appointment-reminders") is before
    assert journeys.last_error is not None
    assert "appointment-reminders.yaml:" in caplog.text and "bad offset '-2x'" in caplog.text


def test_a_new_file_adds_a_journey_and_a_removed_one_drops_it(rules_dir: Path) -> None:
    clock = FakeClock()
    journeys = ReloadingJourneySet(rules_dir, interval=3, clock=clock)
    second = rules_dir / "second.yaml"
    second.write_text((rules_dir / "appointment-reminders.yaml").read_text()
                      .replace("journey: appointment-reminders", "journey: second"))
    clock.now = 5
    assert journeys.by_name("second") is not None
    assert len(journeys.for_resource("Appointment")) == 2
    second.unlink()
    clock.now = 10
    assert journeys.by_name("second") is None
