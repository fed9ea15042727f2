//! The progress bar of a training run on stderr (indicatif; hidden when stderr is not a
//! terminal or without progress).

use std::io::IsTerminal;

use gelunet_shell::server::ServerEvent;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

/// A progress bar on stderr, hidden unless stderr is a terminal and `show`.
pub(crate) fn bar(show: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if !show || !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb
}

/// Drives `pb` from the server's events until the sender is dropped: the bar counts
/// samples towards `epochs` epochs (or sessions, with a session limit).
pub(crate) async fn follow(
    pb: ProgressBar,
    epochs: f64,
    mut rx: mpsc::UnboundedReceiver<ServerEvent>,
) {
    let mut per_epoch: Option<f64> = None;
    while let Some(ev) = rx.recv().await {
        match ev {
            ServerEvent::ClientJoined { name, incarnation } => {
                if incarnation == 0 {
                    pb.set_message(format!("{name} joined"));
                } else {
                    pb.println(format!("{name} rejoined"));
                }
            }
            ServerEvent::ClientLeft { name, reason } => {
                pb.println(format!("{name} left: {reason}"));
            }
            ServerEvent::Refused { refusal } => {
                pb.println(format!("refused a connection: {refusal}"));
            }
            ServerEvent::TrainingStarted {
                clients,
                target_samples,
                max_sessions,
            } => {
                let style = ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                pb.set_style(style);
                if let Some(m) = max_sessions {
                    pb.set_length(m);
                } else if let Some(t) = target_samples {
                    pb.set_length(t);
                    per_epoch = (epochs > 0.0).then(|| t as f64 / epochs);
                }
                pb.set_message(format!("{clients} clients"));
            }
            ServerEvent::SessionDone(s) => match per_epoch {
                Some(e) if e > 0.0 => {
                    pb.set_position(s.samples);
                    pb.set_message(format!(
                        "samples · epoch {:.2}/{epochs} · session {} ({})",
                        s.samples as f64 / e,
                        s.sessions_completed,
                        s.name
                    ));
                }
                _ => {
                    pb.set_position(s.sessions_completed);
                    pb.set_message(format!("sessions ({})", s.name));
                }
            },
            ServerEvent::Checkpoint(_) => {}
        }
    }
    pb.finish_and_clear();
}
