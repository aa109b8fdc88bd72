"""An instance's send policy: pacing, caps, warm-up, quiet hours and typing simulation.

Every cap is a positive number of sends: "no cap" is a large number, never 0 (a 0 that means
"unlimited" in one field and "nothing" in another is how operators get banned). The one
exception is `new_contacts_per_day`, where 0 has a useful meaning: the instance never starts a
conversation, it only writes to contacts it has messaged before (messages to anyone else wait
until they expire or are cancelled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Typing time is drawn once per send slot (with the gap) as base time x uniform(1 - s, 1 + s),
# so two texts of the same length do not show "composing" for exactly the same time.
TYPING_SPREAD = 0.25


@dataclass(frozen=True)
class SendPolicy:
    min_gap_seconds: float
    jitter_min_seconds: float
    jitter_max_seconds: float
    per_minute: int
    per_hour: int
    per_day: int
    new_contacts_per_day: int
    timezone: str
    warmup_days: int
    warmup_first_day_cap: int
    quiet_start_hour: int | None
    quiet_end_hour: int | None
    typing: bool
    typing_chars_per_second: float
    typing_max_seconds: float
    # CheckNumbers lookups (numbers asked of WhatsApp), over a rolling minute and day.
    number_checks_per_minute: int = 20
    number_checks_per_day: int = 500
    # GroupService (ratelimit/groups.py): groups created per rolling day, participants added
    # per rolling hour and day.
    groups_created_per_day: int = 3
    participants_added_per_hour: int = 20
    participants_added_per_day: int = 50

    def violations(self) -> list[tuple[str, str]]:
        """(field name, what is wrong) for every bad value; empty when the policy is usable."""
        bad: list[tuple[str, str]] = []
        for name in ("min_gap_seconds", "jitter_min_seconds", "jitter_max_seconds"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                bad.append((name, "must be a finite number of seconds >= 0"))
        if self.jitter_max_seconds < self.jitter_min_seconds:
            bad.append(("jitter_max_seconds", "must be >= jitter_min_seconds"))
        for name in (
            "per_minute",
            "per_hour",
            "per_day",
            "number_checks_per_minute",
            "number_checks_per_day",
            "groups_created_per_day",
            "participants_added_per_hour",
            "participants_added_per_day",
        ):
            if getattr(self, name) < 1:
                bad.append((name, "must be >= 1 (use a large number for no practical cap)"))
        if self.new_contacts_per_day < 0:
            bad.append(("new_contacts_per_day", "must be >= 0 (0: only known contacts)"))
        if not _is_zone(self.timezone):
            bad.append(("timezone", "must be an IANA time zone name such as America/Sao_Paulo"))
        if self.warmup_days < 1:
            bad.append(("warmup_days", "must be >= 1 (1: no warm-up)"))
        if self.warmup_first_day_cap < 1:
            bad.append(("warmup_first_day_cap", "must be >= 1"))
        elif self.warmup_first_day_cap > self.per_day >= 1:
            bad.append(("warmup_first_day_cap", "must be <= per_day"))
        bad.extend(_quiet_violations(self.quiet_start_hour, self.quiet_end_hour))
        if not math.isfinite(self.typing_chars_per_second) or self.typing_chars_per_second <= 0:
            bad.append(("typing_chars_per_second", "must be a finite number > 0"))
        if not math.isfinite(self.typing_max_seconds) or self.typing_max_seconds < 0:
            bad.append(("typing_max_seconds", "must be a finite number of seconds >= 0"))
        return bad


def _is_zone(name: str) -> bool:
    if not name or name != name.strip():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _quiet_violations(start: int | None, end: int | None) -> list[tuple[str, str]]:
    if start is None and end is None:
        return []
    if start is None or end is None:
        field = "quiet_start_hour" if start is None else "quiet_end_hour"
        return [(field, "set both quiet hours, or neither")]
    bad = [
        (name, "must be an hour from 0 to 23")
        for name, hour in (("quiet_start_hour", start), ("quiet_end_hour", end))
        if not 0 <= hour <= 23
    ]
    if not bad and start == end:
        bad.append(("quiet_end_hour", "must differ from quiet_start_hour (unset both for none)"))
    return bad


def daily_cap(policy: SendPolicy, day_number: int) -> int:
    """The cap on sends on the `day_number`-th local calendar day of the warm-up (day 1 is the
    day warm-up started).

    The ramp is geometric: day 1 allows `warmup_first_day_cap`, day `warmup_days` (and every
    later day) allows `per_day`, and each day in between allows the same factor more than the
    day before, rounded to whole sends. A geometric ramp grows trust at a steady rate; a linear
    one makes its largest relative jump on day 2 (20 -> 130 with the defaults, x6.5), right when
    the number is most fragile. With the defaults: 20, 36, 65, 117, 210, 378, 680.
    """
    first = min(policy.warmup_first_day_cap, policy.per_day)
    if policy.warmup_days <= 1 or day_number >= policy.warmup_days:
        return policy.per_day
    if day_number <= 1:
        return first
    exponent = (day_number - 1) / (policy.warmup_days - 1)
    growth: float = math.pow(policy.per_day / first, exponent)
    return max(first, min(policy.per_day, round(first * growth)))


def typing_seconds(policy: SendPolicy, text_length: int, factor: float) -> float:
    """How long to show "composing" before a text of `text_length` characters: it grows with
    the text (times `factor`, the per-slot random spread) up to `typing_max_seconds`."""
    if not policy.typing or text_length <= 0:
        return 0.0
    return min(policy.typing_max_seconds, text_length / policy.typing_chars_per_second * factor)


# Anti-ban defaults. Nobody outside WhatsApp knows its thresholds; these follow the community
# heuristics cited beside each default in docs/messages.md ("Send policy") and lean to the
# safe side.
# Each cap is a safety net behind the gap: with 30-60 s gaps an instance sends at most ~2 per
# minute, ~80-120 per hour, so the minute and hour caps only bind when an operator shortens
# the gaps.
DEFAULT_POLICY = SendPolicy(
    # WAHA "how to avoid blocking": random 30-60 s between messages. So the gap is
    # 30 s + uniform(0, 30) s, drawn afresh for every send.
    min_gap_seconds=30.0,
    jitter_min_seconds=0.0,
    jitter_max_seconds=30.0,
    # whatsmeow issue #506: more than 5 per minute is "very risky" for cold outreach
    # (baileys-antiban allows 8): cap at the last value not called risky.
    per_minute=5,
    # baileys-antiban caps at 200/h with 1.5-5 s delays; our gaps allow ~80-120/h, and 100
    # keeps an operator who shortens the gaps well under baileys' figure.
    per_hour=100,
    # The end of baileys-antiban's 7-day warm-up (20 -> 680/day). Its 1,500/day ceiling is
    # meant for aged numbers: raise per_day for a number that has been in use for months.
    per_day=680,
    # Ban reason 101 is "sent to too many people who don't have you saved" and cold outreach
    # is the first ban driver in go-whatsapp-web-multidevice #667; no public number exists, so
    # new contacts get a small share (~7%) of the daily cap. Replies to known contacts are not
    # limited by this.
    new_contacts_per_day=50,
    # The day (caps, warm-up) and quiet hours are local: set the zone the recipients live in.
    timezone="UTC",
    # baileys-antiban: a 7-day warm-up starting at 20 per day (see daily_cap for the curve).
    warmup_days=7,
    warmup_first_day_cap=20,
    # Messages at night look automated and annoy recipients into reporting ("5-10 spam
    # reports lead to a ban", WAHA): nothing is sent from 22:00 to 08:00 local time.
    quiet_start_hour=22,
    quiet_end_hour=8,
    # WAHA: show typing for a time that grows with the text. 5 characters per second is a
    # brisk phone typist (~60 words per minute); 15 s keeps long texts inside the 30 s gap.
    typing=True,
    typing_chars_per_second=5.0,
    typing_max_seconds=15.0,
    # Bulk number checks get accounts banned (Evolution API #2228): lookups are paced like
    # sends, and answers are cached for 7 days (as Evolution now does), so a CRM checking a
    # lead list spreads it over days instead of hammering WhatsApp's usync in one burst.
    number_checks_per_minute=20,
    number_checks_per_day=500,
    # Groups (docs/groups.md): whatsmeow's ban reason 103 is "created too many groups", so a
    # few creations a day; and a person added to a group by a number they do not know is a
    # cold contact (ban reason 101), so adds get the same daily budget as new contacts (50),
    # spread over the day (20 an hour) rather than pulled in one burst.
    groups_created_per_day=3,
    participants_added_per_hour=20,
    participants_added_per_day=50,
)
