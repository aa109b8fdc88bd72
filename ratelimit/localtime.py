"""An instance's local calendar: its day boundaries and quiet hours, exact across DST.

Times are epoch seconds. Wall-clock arithmetic never crosses a DST change: every boundary is
found as "the first instant whose local wall time reaches H:00 on date D", which handles the
three shapes a change can take:

- a gap (clocks jump forward; in America/Sao_Paulo until 2019 the jump was at midnight, so
  00:00 did not exist and the day began at 01:00): the boundary is the instant of the jump;
- a fold (clocks go back; 02:00-02:59 happens twice in Europe/Berlin in October): the
  boundary is the first of the two instants;
- nothing special: the one instant with that wall time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class LocalCalendar:
    timezone: str
    quiet_start_hour: int | None = None
    quiet_end_hour: int | None = None
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", ZoneInfo(self.timezone))

    def wall(self, t: float) -> datetime:
        """The local wall-clock time at `t`, without zone."""
        return datetime.fromtimestamp(t, self.zone).replace(tzinfo=None)

    def day(self, t: float) -> date:
        return datetime.fromtimestamp(t, self.zone).date()

    def first_instant_at(self, wall: datetime) -> float:
        """The first instant whose local wall time is `wall` or later."""
        early = wall.replace(tzinfo=self.zone, fold=0).timestamp()
        late = wall.replace(tzinfo=self.zone, fold=1).timestamp()
        low, high = min(early, late), max(early, late)
        if self.wall(low) >= wall:
            return low  # an ordinary time, or the first pass of a fold
        # In a gap: `low` lies before the jump and `high` after it; tz transitions fall on
        # whole seconds, so bisect over whole seconds for the jump.
        lo, hi = math.floor(low), math.ceil(high)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.wall(mid) >= wall:
                hi = mid
            else:
                lo = mid + 1
        return float(lo)

    def day_start(self, day: date) -> float:
        return self.first_instant_at(datetime.combine(day, time()))

    def next_day_start(self, t: float) -> float:
        """The first instant of the local day after the one holding `t`."""
        return self.day_start(self.day(t) + _ONE_DAY)

    def quiet_hour(self, hour: int) -> bool:
        start, end = self.quiet_start_hour, self.quiet_end_hour
        if start is None or end is None:
            return False
        if start < end:
            return start <= hour < end
        return hour >= start or hour < end  # the quiet hours wrap midnight

    def is_quiet(self, t: float) -> bool:
        return self.quiet_hour(self.wall(t).hour)

    def quiet_until(self, t: float) -> float:
        """`t` itself outside quiet hours, otherwise the first instant after them."""
        end = self.quiet_end_hour
        if end is None:
            return t
        for _ in range(4):  # more than one round only in zones with odd transitions
            wall = self.wall(t)
            if not self.quiet_hour(wall.hour):
                return t
            day = wall.date() if wall.hour < end else wall.date() + _ONE_DAY
            t = max(t, self.first_instant_at(datetime.combine(day, time(end))))
        return t
