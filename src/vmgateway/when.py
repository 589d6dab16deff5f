"""Moments, durations and daily windows as people read and write them: local time to the second
with its zone (the box's time zone is the clinic's; Vetmanager's staff read it from elsewhere),
durations in the largest two units, windows as "HH:MM-HH:MM" (the configuration's
`transfers.large_items_window`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from datetime import datetime


def when(timestamp: float | None, missing: str = "–") -> str:
    """`timestamp` (seconds since the epoch) as `YYYY-MM-DD HH:MM:SS ZONE` in local time; `missing`
    for none."""
    return datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if timestamp else missing


def duration(seconds: float) -> str:
    """`seconds` as a person says it: 45 s, 12 min, 3 h 20 min, 2 d 5 h."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if hours < 1:
        return f"{minutes} min"
    if days < 1:
        return f"{hours} h" + (f" {minutes % 60} min" if minutes % 60 else "")
    return f"{days} d" + (f" {hours % 24} h" if hours % 24 else "")


@dataclass(frozen=True)
class Window:
    """A daily window in local time, "HH:MM-HH:MM"; one that ends before it starts runs past midnight."""

    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, text: str) -> Window:
        """ValueError saying what is allowed."""
        try:
            start, end = (dt.time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError:
            raise ValueError('a window is "HH:MM-HH:MM" in local time, e.g. "18:00-07:00"') from None
        if start == end:
            raise ValueError("a window needs an end other than its start (leave it empty for any time)")
        return cls(start.replace(second=0, microsecond=0), end.replace(second=0, microsecond=0))

    def is_open(self, moment: datetime) -> bool:
        now = moment.time()
        if self.start < self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end

    def opens_next(self, moment: datetime) -> datetime:
        """When the window next opens (`moment` itself if it is open)."""
        if self.is_open(moment):
            return moment
        opening = moment.replace(hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0)
        return opening if opening > moment else opening + dt.timedelta(days=1)
