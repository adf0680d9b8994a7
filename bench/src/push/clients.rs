//! The WebSocket clients of `push_fanout_10000` in a process of their own.
//!
//! 10,000 connections held in one process with the stack that serves them
//! need a client and a server socket each, past an open-files limit of
//! 20,000; apart, each process holds one socket per connection. The bench
//! starts its own executable as `status-bench fanout-clients URL N FIRST
//! WATCHED` ([`SUBCOMMAND`], not in the usage text): it connects `N` end
//! users from `FIRST` on, 64 at a time, each subscribing to `WATCHED` and
//! waiting for its snapshot, then reads their frames until its standard
//! input closes, and closes them.
//!
//! It reports on standard output, one line each ([`Report`]):
//!
//! - `connected SECONDS`: every connection holds its snapshot, after
//!   `SECONDS` of setting up;
//! - `frame ONLINE MICROS`: a `status` frame carrying the watched user
//!   arrived, showing it online (`1`) or not (`0`), at `MICROS` since the
//!   Unix epoch (taken as the frame is read, before any writing);
//! - `closed`: every connection closed, the last line;
//! - `error MESSAGE`: it failed, the last line (and it exits non-zero).

use std::io::{BufRead, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::client::{entry_of, Client};
use super::raise_open_files;
use crate::Error;

/// The first argument that makes the executable the client process.
pub const SUBCOMMAND: &str = "fanout-clients";

/// Connections set up at once.
const SETUP_CONCURRENCY: usize = 64;

/// Descriptors beyond one per connection: the runtime, stdio, slack.
pub const SPARE_FILES: u64 = 1_024;

/// One line of the client process's report.
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    Connected(f64),
    Frame { online: bool, at_us: u64 },
    Closed,
    Error(String),
}

impl Report {
    /// The line, without its newline.
    pub fn line(&self) -> String {
        match self {
            Report::Connected(seconds) => format!("connected {seconds}"),
            Report::Frame { online, at_us } => format!("frame {} {at_us}", u8::from(*online)),
            Report::Closed => "closed".to_owned(),
            Report::Error(message) => format!("error {}", message.replace('\n', " ")),
        }
    }

    /// Reads one line; `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
        match head {
            "connected" => Some(Report::Connected(rest.parse().ok()?)),
            "frame" => {
                let (online, at) = rest.split_once(' ')?;
                let online = match online {
                    "1" => true,
                    "0" => false,
                    _ => return None,
                };
                Some(Report::Frame { online, at_us: at.parse().ok()? })
            }
            "closed" if rest.is_empty() => Some(Report::Closed),
            "error" => Some(Report::Error(rest.to_owned())),
            _ => None,
        }
    }
}

/// Microseconds since the Unix epoch, now.
pub fn epoch_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The client process: `args` are what follows [`SUBCOMMAND`]. Returns
/// whether it ran to the end.
pub async fn main(args: &[String]) -> bool {
    let (lines, written) = mpsc::unbounded_channel::<Report>();
    let writer = tokio::task::spawn_blocking(move || write(written));
    let outcome = run(args, &lines).await;
    let ok = outcome.is_ok();
    let _ = lines.send(match outcome {
        Ok(()) => Report::Closed,
        Err(error) => Report::Error(error.to_string()),
    });
    drop(lines);
    let _ = writer.await;
    ok
}

async fn run(args: &[String], lines: &mpsc::UnboundedSender<Report>) -> Result<(), Error> {
    let [url, count, first, watched] = args else {
        return Err(format!("usage: status-bench {SUBCOMMAND} WS_URL CONNECTIONS FIRST_VIEWER WATCHED").into());
    };
    let count: u64 = count.parse()?;
    let first: u64 = first.parse()?;
    let watched: u64 = watched.parse()?;
    raise_open_files(count + SPARE_FILES)?;

    let started = Instant::now();
    let clients: Vec<Client> = stream::iter(first..first + count)
        .map(|viewer| async move {
            let mut client = Client::connect(url, viewer).await?;
            client.subscribe(&[watched], None).await?;
            client.answer("snapshot").await?;
            Ok::<_, Error>(client)
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect()
        .await?;
    let (stop, stopped) = watch::channel(false);
    let readers: Vec<_> =
        clients.into_iter().map(|c| tokio::spawn(read(c, watched, lines.clone(), stopped.clone()))).collect();
    let _ = lines.send(Report::Connected(started.elapsed().as_secs_f64()));

    // Until the bench closes our standard input.
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().lock().lines().map_while(Result::ok).count()).await;
    let _ = stop.send(true);
    for reader in readers {
        let _ = reader.await;
    }
    Ok(())
}

/// Writes the report lines, flushing whenever none is waiting (on a
/// thread of its own: standard output blocks).
fn write(mut reports: mpsc::UnboundedReceiver<Report>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    while let Some(report) = reports.blocking_recv() {
        if writeln!(out, "{}", report.line()).is_err() {
            return;
        }
        if reports.is_empty() && out.flush().is_err() {
            return;
        }
    }
    let _ = out.flush();
}

/// Reads one connection's frames until stopped, reporting each `status`
/// frame about `watched`; then closes it.
async fn read(
    mut client: Client,
    watched: u64,
    lines: mpsc::UnboundedSender<Report>,
    mut stopped: watch::Receiver<bool>,
) {
    // No timer per connection: 10,000 of them waking would cost the cores.
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    loop {
        tokio::select! {
            frame = client.next_until(deadline) => match frame {
                Ok(Some(frame)) => {
                    let at_us = epoch_us();
                    if let Some(entry) = entry_of(&frame, watched) {
                        let _ = lines.send(Report::Frame { online: entry["status"] == "online", at_us });
                    }
                }
                Ok(None) => {}
                Err(_) => break,
            },
            _ = stopped.wait_for(|s| *s) => break,
        }
    }
    client.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_read_back() {
        for report in [
            Report::Connected(12.5),
            Report::Frame { online: true, at_us: 1_796_000_000_000_123 },
            Report::Frame { online: false, at_us: 7 },
            Report::Closed,
            Report::Error("no frame within the limit".into()),
        ] {
            assert_eq!(Report::parse(&report.line()), Some(report));
        }
        for bad in ["", "frame 2 5", "frame 1", "frame 1 x", "connected", "closed now", "hello"] {
            assert_eq!(Report::parse(bad), None, "{bad}");
        }
    }
}
