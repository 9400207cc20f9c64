//! `spec.pauseWindows`: quiet hours. Each window opens at its cron schedule's times, in its
//! time zone, and lasts its duration; a scheduled loop that would start inside one starts at
//! the end of the windows that cover it (their union), once.

use std::time::Duration;

use croner::parser::{CronParser, Seconds};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::schedule;

/// The most windows a union is followed through before the answer is "paused until then, look
/// again": windows that cover all time must not spin the operator.
const MAX_CHAIN: usize = 1000;

/// One pause window, validated.
#[derive(Clone, Debug)]
pub struct Window {
    /// The schedule as written, for messages.
    pub schedule: String,
    cron: Cron,
    pub duration: Duration,
    pub zone: TimeZone,
    /// The zone as written (`UTC` when absent).
    pub zone_name: String,
}

impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        (&self.schedule, self.duration, &self.zone_name) == (&other.schedule, other.duration, &other.zone_name)
    }
}

/// Where a loop is paused: until `until`, the end of the windows that cover it, the latest of
/// which is `window` (its index in spec.pauseWindows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pause {
    pub until: Timestamp,
    pub window: usize,
}

impl Window {
    /// Reads a window; the error names the field, for `spec.pauseWindows[i]`.
    pub fn parse(i: usize, schedule: &str, duration: Duration, time_zone: Option<&str>) -> Result<Window, String> {
        let field = |f: &str| format!("spec.pauseWindows[{i}].{f}");
        let parser = CronParser::builder().seconds(Seconds::Disallowed).build();
        let cron = parser.parse(schedule.trim()).map_err(|e| {
            format!(
                "{}: {schedule:?} is not a cron schedule of five fields (minute hour day-of-month month day-of-week, as a CronJob's): {e}",
                field("schedule")
            )
        })?;
        let zone_name = time_zone.unwrap_or("UTC").to_string();
        let zone = TimeZone::get(&zone_name).map_err(|_| {
            format!("{}: {zone_name:?} is not a time zone of the IANA database (e.g. Europe/Berlin, UTC)", field("timeZone"))
        })?;
        Ok(Window { schedule: schedule.to_string(), cron, duration, zone, zone_name })
    }

    /// When this window, as it stands at `t`, ends: the end of its latest opening at or before
    /// `t`, when `t` is before that end.
    fn end_covering(&self, t: Timestamp) -> Option<Timestamp> {
        let opened = self.cron.find_previous_occurrence(&t.to_zoned(self.zone.clone()), true).ok()?;
        let end = schedule::add(opened.timestamp(), self.duration);
        (t < end).then_some(end)
    }

    /// What the message calls it: the schedule, and the zone when not UTC.
    pub fn describe(&self) -> String {
        if self.zone_name == "UTC" {
            format!("{:?}", self.schedule)
        } else {
            format!("{:?} ({})", self.schedule, self.zone_name)
        }
    }
}

/// Whether `t` is inside a window, and then until when: the end of the union of the windows
/// that cover `t`, each window that covers an end taking it further.
pub fn paused_at(windows: &[Window], t: Timestamp) -> Option<Pause> {
    let mut pause: Option<Pause> = None;
    let mut at = t;
    for _ in 0..MAX_CHAIN {
        let latest = windows.iter().enumerate().filter_map(|(i, w)| w.end_covering(at).map(|end| (end, i))).max();
        match latest {
            Some((until, window)) => {
                pause = Some(Pause { until, window });
                at = until;
            }
            None => break,
        }
    }
    pause
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn window(schedule: &str, duration_s: u64, zone: Option<&str>) -> Window {
        Window::parse(0, schedule, Duration::from_secs(duration_s), zone).unwrap()
    }

    const H: u64 = 3600;

    #[test]
    fn a_weeknight_window_in_berlin_pauses_from_22_to_8_local() {
        // 2026-12-07 is a Monday; Berlin is UTC+1 in winter.
        let w = [window("0 22 * * 1-5", 10 * H, Some("Europe/Berlin"))];
        #[rustfmt::skip]
        let cases = [
            ("Monday 21:59 Berlin: open", "2026-12-07T20:59:00Z", None),
            ("Monday 22:00 Berlin: paused", "2026-12-07T21:00:00Z", Some("2026-12-08T07:00:00Z")),
            ("Tuesday 07:59 Berlin: paused", "2026-12-08T06:59:00Z", Some("2026-12-08T07:00:00Z")),
            ("Tuesday 08:00 Berlin: open", "2026-12-08T07:00:00Z", None),
            ("Saturday 23:00 Berlin: no window opens at the weekend", "2026-12-12T22:00:00Z", None),
            ("Friday 23:00 Berlin: the window that opened Friday", "2026-12-11T22:00:00Z", Some("2026-12-12T07:00:00Z")),
        ];
        for (name, at, until) in cases {
            assert_eq!(paused_at(&w, utc(at)).map(|p| p.until), until.map(utc), "{name}");
        }
    }

    #[test]
    fn overlapping_windows_pause_until_the_end_of_their_union() {
        // 01:00-03:00 and 02:00-05:00 UTC, and 05:00-06:00 right after: one pause until 06:00.
        let w = [window("0 1 * * *", 2 * H, None), window("0 2 * * *", 3 * H, None), window("0 5 * * *", H, None)];
        let p = paused_at(&w, utc("2026-12-05T01:30:00Z")).unwrap();
        assert_eq!((p.until, p.window), (utc("2026-12-05T06:00:00Z"), 2));
        assert_eq!(paused_at(&w, utc("2026-12-05T06:00:00Z")), None);
        // A window longer than its schedule's period covers all time: the answer is finite.
        let always = [window("* * * * *", 120, None)];
        let p = paused_at(&always, utc("2026-12-05T00:00:00Z")).unwrap();
        assert!(p.until > utc("2026-12-05T00:00:00Z"));
    }

    #[test]
    fn the_duration_is_real_time_across_daylight_saving_changes() {
        // Berlin springs forward on 2026-03-29 at 02:00 (to 03:00) and falls back on 2026-10-25
        // at 03:00 (to 02:00). A window opening Saturday 22:00 for 10 h ends 08:00 local on a
        // normal night, at 09:00 local (07:00 UTC) in spring, at 07:00 local (06:00 UTC) in autumn.
        let w = [window("0 22 * * 6", 10 * H, Some("Europe/Berlin"))];
        assert_eq!(paused_at(&w, utc("2026-03-28T22:00:00Z")).unwrap().until, utc("2026-03-29T07:00:00Z"));
        assert_eq!(paused_at(&w, utc("2026-10-24T21:00:00Z")).unwrap().until, utc("2026-10-25T06:00:00Z"));
        // A window that opens in the hour the spring change skips opens when the hour is back.
        let gap = [window("30 2 * * *", H, Some("Europe/Berlin"))];
        assert_eq!(paused_at(&gap, utc("2026-03-29T00:59:00Z")), None, "01:59 CET");
        assert_eq!(paused_at(&gap, utc("2026-03-29T01:00:00Z")).unwrap().until, utc("2026-03-29T02:00:00Z"), "03:00 CEST");
        // One that opens in the hour the autumn change repeats opens once, the first time.
        let fold = [window("30 2 * * *", 600, Some("Europe/Berlin"))];
        assert_eq!(paused_at(&fold, utc("2026-10-25T00:35:00Z")).unwrap().until, utc("2026-10-25T00:40:00Z"), "02:35 CEST");
        assert_eq!(paused_at(&fold, utc("2026-10-25T01:35:00Z")), None, "02:35 CET, the second time");
    }

    #[test]
    fn bad_schedules_and_zones_are_refused_naming_the_field() {
        let e = Window::parse(2, "0 22 * *", Duration::from_secs(H), None).unwrap_err();
        assert!(e.starts_with("spec.pauseWindows[2].schedule: \"0 22 * *\" is not a cron schedule"), "{e}");
        let e = Window::parse(0, "0 0 22 * * 1-5", Duration::from_secs(H), None).unwrap_err();
        assert!(e.starts_with("spec.pauseWindows[0].schedule"), "seconds are not a field: {e}");
        let e = Window::parse(1, "0 22 * * *", Duration::from_secs(H), Some("Mars/Olympus")).unwrap_err();
        assert_eq!(e, "spec.pauseWindows[1].timeZone: \"Mars/Olympus\" is not a time zone of the IANA database (e.g. Europe/Berlin, UTC)");
        assert_eq!(window("@daily", H, None).describe(), "\"@daily\"");
        assert_eq!(window("0 22 * * 1-5", H, Some("Europe/Berlin")).describe(), "\"0 22 * * 1-5\" (Europe/Berlin)");
    }
}
