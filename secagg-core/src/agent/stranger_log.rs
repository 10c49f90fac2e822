//! How an agent tells of the strangers it drops without filling its log: the first few of every
//! interval get a line each (their address and what was wrong), the others are only counted,
//! and one line per interval gives the count, as a negotiation does for its session
//! ([`crate::transport::mesh::MAX_REJECTION_WARNINGS`]). One line per stranger made 163 KB of
//! log in 10 s under 5,500 connections per second (issue 20, item 5).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::transport::mesh::MAX_REJECTION_WARNINGS;

/// How often the count of the strangers dropped without a line of their own is logged.
pub const STRANGER_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Strangers logged one by one per interval.
pub const STRANGER_LINES_PER_INTERVAL: usize = MAX_REJECTION_WARNINGS;

/// Whether a dropped stranger gets a line of its own ([`StrangerLog::line`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// Yes.
    Own,
    /// Yes, the interval's last one: the line says that the next are only counted.
    Last,
    /// No: it is counted in the interval's summary.
    Counted,
}

impl Line {
    /// What the interval's last line adds.
    pub fn suffix(self) -> String {
        match self {
            Line::Last => format!(
                "; further strangers are only counted, one line every {} s",
                STRANGER_LOG_INTERVAL.as_secs()
            ),
            _ => String::new(),
        }
    }
}

struct Window {
    started: Instant,
    lines: usize,
    /// Dropped after their handshake failed, without a line of their own.
    counted: u64,
    /// Evicted while their handshake was pending, without a line of their own.
    evicted: u64,
    /// Refused at once: every pending slot was held by registered addresses.
    refused: u64,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            started: now,
            lines: 0,
            counted: 0,
            evicted: 0,
            refused: 0,
        }
    }
}

/// The strangers of the current interval (see the module documentation).
pub struct StrangerLog {
    window: Mutex<Window>,
}

impl Default for StrangerLog {
    fn default() -> Self {
        StrangerLog {
            window: Mutex::new(Window::new(Instant::now())),
        }
    }
}

impl StrangerLog {
    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a stranger just dropped gets a line of its own; if not, it is counted.
    pub fn line(&self) -> Line {
        let mut w = self.window();
        if w.lines >= STRANGER_LINES_PER_INTERVAL {
            w.counted += 1;
            return Line::Counted;
        }
        w.lines += 1;
        match w.lines {
            STRANGER_LINES_PER_INTERVAL => Line::Last,
            _ => Line::Own,
        }
    }

    /// Counts a handshake evicted while pending without a line of its own (every stranger's).
    pub fn evicted(&self) {
        self.window().evicted += 1;
    }

    /// Counts a stranger refused at once (every pending slot held by registered addresses).
    pub fn refused(&self) {
        self.window().refused += 1;
    }

    /// Ends the interval at `now`: the line that counts the strangers dropped in it without a
    /// line of their own, if there were any.
    pub fn end_interval(&self, now: Instant) -> Option<String> {
        let w = std::mem::replace(&mut *self.window(), Window::new(now));
        let total = w.counted + w.evicted + w.refused;
        if total == 0 {
            return None;
        }
        let parts = [
            (w.evicted, format!("{} evicted while their handshake was pending (strangers may hold {} pending handshakes)", w.evicted, super::admission::STRANGER_SLOTS)),
            (w.counted, format!("{} failed their handshake", w.counted)),
            (w.refused, format!("{} refused at once (every pending handshake was a registered address's)", w.refused)),
        ];
        let parts: Vec<String> = parts
            .into_iter()
            .filter(|(n, _)| *n > 0)
            .map(|(_, p)| p)
            .collect();
        Some(format!(
            "{total} more connection(s) that did not authenticate were dropped in the last {:.0} s without a line each: {}",
            now.saturating_duration_since(w.started).as_secs_f64(),
            parts.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_strangers_of_an_interval_get_a_line_the_rest_a_count() {
        let log = StrangerLog::default();
        let lines: Vec<Line> = (0..STRANGER_LINES_PER_INTERVAL + 5)
            .map(|_| log.line())
            .collect();
        assert!(lines[..STRANGER_LINES_PER_INTERVAL - 1]
            .iter()
            .all(|l| *l == Line::Own));
        assert_eq!(lines[STRANGER_LINES_PER_INTERVAL - 1], Line::Last);
        assert!(lines[STRANGER_LINES_PER_INTERVAL..]
            .iter()
            .all(|l| *l == Line::Counted));
        log.evicted();
        log.evicted();
        log.refused();
        let summary = log.end_interval(Instant::now()).unwrap();
        assert!(
            summary.starts_with(
                "8 more connection(s) that did not authenticate were dropped in the last"
            ),
            "{summary}"
        );
        let parts = format!(
            "2 evicted while their handshake was pending (strangers may hold {} pending handshakes), 5 failed their handshake, 1 refused at once (every pending handshake was a registered address's)",
            super::super::admission::STRANGER_SLOTS
        );
        assert!(summary.ends_with(&parts), "{summary}");
        // A new interval: lines again, and nothing to count yet.
        assert_eq!(log.line(), Line::Own);
        assert_eq!(log.end_interval(Instant::now()), None);
    }
}
