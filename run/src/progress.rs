//! The progress of a training run on stderr: on a terminal an indicatif bar, elsewhere
//! (a pipe, a log file, CI) a log line every [`LOG_EVERY`]; both show the sessions, the
//! samples, samples/s and the time left, from the same [`Tracker`]. Without progress
//! (`--quiet`) nothing is shown. [`init_tracing`] sets up the log lines on stderr.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use gelunet_shell::server::ServerEvent;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

/// Initializes tracing on stderr once per process (later calls do nothing): `RUST_LOG`
/// if set, else `warn` (`error` with `quiet`); colours only on a terminal.
pub fn init_tracing(quiet: bool) {
    let default = if quiet { "error" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// How often a non-terminal gets a progress line (at most; and one at the start and the
/// end).
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(5);

/// The run's counters, from the server's events; I/O-free (time passed in).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Tracker {
    /// When training started (the first session's start is the next instant).
    started: Option<Instant>,
    /// Epoch limit of the stop rule (for the `epochs` figure).
    epochs: f64,
    /// Samples of the epoch target, if any.
    target_samples: Option<u64>,
    /// Session limit, if any.
    max_sessions: Option<u64>,
    /// Completed sessions.
    sessions: u64,
    /// Samples processed in completed sessions.
    samples: u64,
}

impl Tracker {
    /// A tracker for a run of `epochs` epochs (the epoch limit, 1 without one).
    pub(crate) fn new(epochs: f64) -> Self {
        Self {
            epochs,
            ..Self::default()
        }
    }

    /// Training started at `now` with these limits.
    pub(crate) fn start(&mut self, now: Instant, target: Option<u64>, max: Option<u64>) {
        self.started = Some(now);
        self.target_samples = target;
        self.max_sessions = max;
    }

    /// A session completed: the run's totals so far.
    pub(crate) fn session(&mut self, sessions: u64, samples: u64) {
        self.sessions = sessions;
        self.samples = samples;
    }

    /// The fraction done, in `[0, 1]`: the larger of the two limits' fractions (the run
    /// stops at whichever comes first).
    pub(crate) fn fraction(&self) -> Option<f64> {
        let by_samples = self
            .target_samples
            .filter(|&t| t > 0)
            .map(|t| self.samples as f64 / t as f64);
        let by_sessions = self
            .max_sessions
            .filter(|&m| m > 0)
            .map(|m| self.sessions as f64 / m as f64);
        match (by_samples, by_sessions) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
        .map(|f| f.clamp(0.0, 1.0))
    }

    /// Samples per second since training started.
    pub(crate) fn rate(&self, now: Instant) -> Option<f64> {
        let secs = now.checked_duration_since(self.started?)?.as_secs_f64();
        (secs > 0.0).then(|| self.samples as f64 / secs)
    }

    /// Time left, extrapolated from the fraction done so far.
    pub(crate) fn time_left(&self, now: Instant) -> Option<Duration> {
        let f = self.fraction()?;
        let elapsed = now.checked_duration_since(self.started?)?.as_secs_f64();
        (f > 0.0).then(|| Duration::from_secs_f64(elapsed * (1.0 - f) / f))
    }

    /// The progress line: `session 4/10 · 480/1200 samples (0.40 epochs) · 35.2 samples/s
    /// · about 12 s left`.
    pub(crate) fn line(&self, now: Instant) -> String {
        let sessions = match self.max_sessions {
            Some(m) => format!("session {}/{m}", self.sessions),
            None => format!("session {}", self.sessions),
        };
        let samples = match self.target_samples {
            Some(t) if t > 0 => format!(
                "{}/{t} samples ({:.2} epochs)",
                self.samples,
                self.samples as f64 / t as f64 * self.epochs
            ),
            _ => format!("{} samples", self.samples),
        };
        let rate = self
            .rate(now)
            .map_or("– samples/s".into(), |r| format!("{r:.1} samples/s"));
        let left = match (self.sessions, self.time_left(now)) {
            (0, _) | (_, None) => "time left unknown".to_string(),
            (_, Some(d)) => format!("about {} left", human(d)),
        };
        format!("{sessions} · {samples} · {rate} · {left}")
    }
}

/// `1 h 02 min`, `3 min 05 s`, `12 s`.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

/// Where the progress goes.
enum Sink {
    /// A terminal: an indicatif bar (permille of the fraction done).
    Bar(ProgressBar),
    /// Not a terminal: a line at most every [`LOG_EVERY`].
    Log { last: Option<Instant> },
    /// `--quiet`.
    Silent,
}

/// The progress display of a run: a [`Tracker`] and where it is shown.
pub(crate) struct Progress {
    tracker: Tracker,
    sink: Sink,
}

impl Progress {
    /// A bar on a terminal stderr, log lines on any other, nothing unless `show`.
    pub(crate) fn new(show: bool, epochs: f64) -> Self {
        let sink = if !show {
            Sink::Silent
        } else if std::io::stderr().is_terminal() {
            let pb = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            pb.set_style(style);
            pb.set_message("waiting for clients");
            Sink::Bar(pb)
        } else {
            Sink::Log { last: None }
        };
        Self {
            tracker: Tracker::new(epochs),
            sink,
        }
    }

    /// A message that is not progress (a client joined or left).
    fn note(&self, msg: &str) {
        match &self.sink {
            Sink::Bar(pb) => pb.println(msg),
            Sink::Log { .. } => log_line(format_args!("{msg}")),
            Sink::Silent => {}
        }
    }

    /// Shows the tracker's line: always on the bar, on a log when `force` or
    /// [`LOG_EVERY`] has passed.
    fn show(&mut self, now: Instant, force: bool) {
        let line = self.tracker.line(now);
        let fraction = self.tracker.fraction();
        self.show_line(line, fraction, now, force);
    }

    /// Shows `line` (and the bar at `fraction`): always on the bar, on a log when `force`
    /// or [`LOG_EVERY`] has passed.
    fn show_line(&mut self, line: String, fraction: Option<f64>, now: Instant, force: bool) {
        match &mut self.sink {
            Sink::Bar(pb) => {
                if let Some(f) = fraction {
                    pb.set_position((f * 1000.0) as u64);
                }
                pb.set_message(line);
            }
            Sink::Log { last } => {
                let due = last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY);
                if force || due {
                    log_line(format_args!("progress: {line}"));
                    *last = Some(now);
                }
            }
            Sink::Silent => {}
        }
    }

    /// Handles one server event at `now`.
    pub(crate) fn event(&mut self, ev: ServerEvent, now: Instant) {
        match ev {
            ServerEvent::ClientJoined { name, incarnation } => {
                self.note(&if incarnation == 0 {
                    format!("{name} joined")
                } else {
                    format!("{name} rejoined")
                });
            }
            ServerEvent::ClientLeft { name, reason } => {
                self.note(&format!("{name} left: {reason}"))
            }
            ServerEvent::Refused { refusal } => {
                self.note(&format!("refused a connection: {refusal}"));
            }
            ServerEvent::TrainingStarted {
                clients,
                target_samples,
                max_sessions,
            } => {
                self.note(&format!("training started with {clients} clients"));
                self.tracker.start(now, target_samples, max_sessions);
                self.show(now, true);
            }
            ServerEvent::SessionDone(s) => {
                self.tracker.session(s.sessions_completed, s.samples);
                self.show(now, false);
            }
            ServerEvent::Checkpoint(_) => {}
        }
    }

    /// A periodic tick (the log line of a slow session).
    pub(crate) fn tick(&mut self, now: Instant) {
        if self.tracker.started.is_some() {
            self.show(now, false);
        }
    }

    /// The end: the bar is cleared, a log gets its last line.
    pub(crate) fn finish(mut self, now: Instant) {
        if self.tracker.started.is_some() {
            self.show(now, true);
        }
        if let Sink::Bar(pb) = &self.sink {
            pb.finish_and_clear();
        }
    }
}

/// The progress line of one client (`gelunet join`): its sessions, their rate, and the
/// time since it started. A client is not told the run's target, so it shows no time
/// left.
pub(crate) fn client_line(
    name: &str,
    (sessions, abandoned): (u64, u64),
    elapsed: Duration,
) -> String {
    let per = if sessions > 0 {
        format!(
            "{:.1} s per session",
            elapsed.as_secs_f64() / sessions as f64
        )
    } else {
        "– s per session".into()
    };
    format!(
        "{name}: {sessions} sessions done ({abandoned} abandoned) · {per} · {} so far (the server decides when training ends)",
        human(elapsed)
    )
}

/// Shows the progress of one client (`gelunet join`) from its session counts until the
/// sender is dropped: the same bar or log lines as the server's ([`Progress::new`]).
pub(crate) async fn follow_client(
    name: String,
    mut p: Progress,
    mut rx: mpsc::UnboundedReceiver<(u64, u64)>,
) {
    let t0 = Instant::now();
    let mut counts = (0, 0);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            c = rx.recv() => match c {
                Some(c) => {
                    counts = c;
                    p.show_line(client_line(&name, counts, t0.elapsed()), None, Instant::now(), false);
                }
                None => break,
            },
            _ = tick.tick() => {
                p.show_line(client_line(&name, counts, t0.elapsed()), None, Instant::now(), false);
            }
        }
    }
    p.show_line(
        client_line(&name, counts, t0.elapsed()),
        None,
        Instant::now(),
        true,
    );
    if let Sink::Bar(pb) = &p.sink {
        pb.finish_and_clear();
    }
}

/// Shows the progress of a run from the server's events until the sender is dropped.
pub(crate) async fn follow(mut p: Progress, mut rx: mpsc::UnboundedReceiver<ServerEvent>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => p.event(ev, Instant::now()),
                None => break,
            },
            _ = tick.tick() => p.tick(Instant::now()),
        }
    }
    p.finish(Instant::now());
}

/// Writes one line to standard error. A closed standard error drops the line instead of
/// panicking as `eprintln!` does: progress is never worth the run.
fn log_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_sessions_rate_and_time_left() {
        let t0 = Instant::now();
        let mut t = Tracker::new(2.0);
        assert_eq!(t.fraction(), None);
        t.start(t0, Some(1200), None);
        assert!(t.line(t0).contains("time left unknown"), "{}", t.line(t0));
        t.session(4, 300);
        let now = t0 + Duration::from_secs(10);
        assert_eq!(t.fraction(), Some(0.25));
        assert_eq!(t.rate(now), Some(30.0));
        assert_eq!(t.time_left(now), Some(Duration::from_secs(30)));
        let line = t.line(now);
        assert_eq!(
            line,
            "session 4 · 300/1200 samples (0.50 epochs) · 30.0 samples/s · about 30 s left"
        );
        // With a session limit too, the nearer limit decides.
        t.start(t0, Some(1200), Some(5));
        t.session(4, 300);
        assert_eq!(t.fraction(), Some(0.8));
        assert!(t.line(now).starts_with("session 4/5 · "));
        assert_eq!(human(Duration::from_secs(3725)), "1 h 02 min");
        assert_eq!(human(Duration::from_secs(185)), "3 min 05 s");
        let c = client_line("c", (4, 1), Duration::from_secs(10));
        assert!(
            c.starts_with("c: 4 sessions done (1 abandoned) · 2.5 s per session · 10 s"),
            "{c}"
        );
    }

    #[test]
    fn a_log_prints_at_most_every_few_seconds() {
        let t0 = Instant::now();
        let mut p = Progress {
            tracker: Tracker::new(1.0),
            sink: Sink::Log { last: None },
        };
        p.tracker.start(t0, Some(100), None);
        p.show(t0, true);
        let last = |p: &Progress| match p.sink {
            Sink::Log { last } => last,
            _ => None,
        };
        assert_eq!(last(&p), Some(t0));
        p.tick(t0 + Duration::from_secs(1));
        assert_eq!(last(&p), Some(t0));
        p.tick(t0 + LOG_EVERY);
        assert_eq!(last(&p), Some(t0 + LOG_EVERY));
    }
}
