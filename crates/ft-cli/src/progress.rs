//! Progress display for long work: drawn on stderr, and only when stdout is
//! a terminal, so piped or logged output stays clean.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress should be drawn at all.
pub fn visible() -> bool {
    std::io::stdout().is_terminal()
}

/// A spinner with elapsed time for work of unknown length; hidden when
/// stdout is not a terminal.
pub fn spinner(msg: &str) -> ProgressBar {
    let target = if visible() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(None, target);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
        pb.set_style(style);
    }
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_when_not_a_terminal() {
        // Under `cargo test` stdout is captured, not a terminal.
        if !visible() {
            assert!(spinner("x").is_hidden());
        }
    }
}
