//! The open connections of the local WebSocket API, by connection id: what
//! the management API (`@connections`) reads and writes, and each
//! connection's bounded outbound queue (DESIGN §12, "Locally").

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hyper::body::Bytes;
use status_shared::domain::Millis;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::event::Disconnect;

/// The most frames one connection's outbound queue holds before the
/// client has read them.
pub const MAX_QUEUED_FRAMES: usize = 1024;

/// The most bytes of frame data one connection's outbound queue holds
/// (4 MiB), counted from `PostToConnection` until the frame is handed to
/// the socket. A client that stops reading fills its socket buffers, then
/// this queue; the post that would go past either bound closes the
/// connection instead (close code 1008), so a slow reader costs at most
/// this much memory, and every later post to it answers `410 Gone`.
pub const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;

/// Why the gateway ended a connection, shown to the client in the close
/// frame and to the function in `$disconnect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close frame: its code (1005 when it gave none)
    /// and reason.
    ByClient { code: u16, reason: String },
    /// The TCP connection ended without a close handshake.
    Dropped,
    /// `DELETE @connections/{id}`.
    Deleted,
    /// A frame over 32 KiB or a message over 128 KiB from the client,
    /// (over 1 MiB here), which closes with 1009.
    TooBig,
    /// The outbound queue went past [`MAX_QUEUED_FRAMES`] or
    /// [`MAX_QUEUED_BYTES`].
    SlowReader,
    /// No frame from the client for the idle timeout.
    Idle,
    /// The connection reached its longest allowed duration.
    Expired,
    /// The local stack is stopping.
    ShuttingDown,
}

impl CloseReason {
    /// The close frame's code, as API Gateway would send it.
    pub fn code(&self) -> CloseCode {
        CloseCode::from(self.disconnect().status_code)
    }

    /// What `$disconnect` reports (`disconnectStatusCode`,
    /// `disconnectReason`).
    pub fn disconnect(&self) -> Disconnect {
        let (status_code, reason) = match self {
            CloseReason::ByClient { code, reason } if *code == 1005 && reason.is_empty() => {
                (1005, "Client-side close frame status not set")
            }
            CloseReason::ByClient { code, reason } => return Disconnect { status_code: *code, reason: reason.clone() },
            CloseReason::Dropped => (1006, "Connection closed abnormally"),
            CloseReason::Deleted => (1000, "Connection deleted"),
            CloseReason::TooBig => (1009, "Message too big"),
            CloseReason::SlowReader => (1008, "Client too slow: outbound queue full"),
            CloseReason::Idle => (1001, "Going away: idle timeout"),
            CloseReason::Expired => (1001, "Going away: connection duration exceeded"),
            CloseReason::ShuttingDown => (1001, "Going away"),
        };
        Disconnect { status_code, reason: reason.to_owned() }
    }
}

/// What `GET @connections/{id}` describes.
#[derive(Clone, Debug)]
pub struct Description {
    pub connected_at: Millis,
    pub last_active_at: Millis,
    pub source_ip: String,
    pub user_agent: String,
}

/// One open connection as the registry holds it.
pub struct Connection {
    connected_at: Millis,
    last_active_at: AtomicI64,
    source_ip: String,
    user_agent: String,
    outbound: mpsc::Sender<(Message, usize)>,
    queued_bytes: AtomicUsize,
    closing: watch::Sender<Option<CloseReason>>,
}

/// The connection task's side of a [`Connection`].
pub struct ConnectionEnds {
    /// Frames to write, each with its byte count for [`Connection::sent`].
    pub outbound: mpsc::Receiver<(Message, usize)>,
    /// Becomes `Some` once, when the connection is to end.
    pub closing: watch::Receiver<Option<CloseReason>>,
}

impl Connection {
    /// A connection and its task's ends; not yet in any registry.
    pub fn new(connected_at: Millis, source_ip: String, user_agent: String) -> (Arc<Self>, ConnectionEnds) {
        let (outbound, queue) = mpsc::channel(MAX_QUEUED_FRAMES);
        let (closing, closing_rx) = watch::channel(None);
        let connection = Arc::new(Self {
            connected_at,
            last_active_at: AtomicI64::new(connected_at),
            source_ip,
            user_agent,
            outbound,
            queued_bytes: AtomicUsize::new(0),
            closing,
        });
        (connection, ConnectionEnds { outbound: queue, closing: closing_rx })
    }

    /// Notes client activity at `now` (ms), for `LastActiveAt`.
    pub fn touch(&self, now: Millis) {
        self.last_active_at.fetch_max(now, Ordering::Relaxed);
    }

    /// Asks the connection task to end the connection for `reason`; only
    /// the first reason counts. Returns whether this call was the first.
    pub fn close(&self, reason: CloseReason) -> bool {
        self.closing.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(reason);
            true
        })
    }

    /// Hands `frame` to the writer; `false` (after closing the connection
    /// as a slow reader) when either queue bound would be passed, or when
    /// the connection is already ending.
    pub fn enqueue(&self, frame: Message) -> bool {
        let bytes = frame.len();
        let queued = self.queued_bytes.fetch_add(bytes, Ordering::AcqRel).saturating_add(bytes);
        if queued > MAX_QUEUED_BYTES {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.close(CloseReason::SlowReader);
            return false;
        }
        match self.outbound.try_send((frame, bytes)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                self.close(CloseReason::SlowReader);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                false
            }
        }
    }

    /// Called by the writer once a frame of `bytes` left the queue.
    pub fn sent(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn describe(&self) -> Description {
        Description {
            connected_at: self.connected_at,
            last_active_at: self.last_active_at.load(Ordering::Relaxed),
            source_ip: self.source_ip.clone(),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// The open connections by id. A connection leaves it the moment it is
/// asked to close, so the management API answers `410` from then on.
#[derive(Default)]
pub struct Registry {
    open: Mutex<HashMap<String, Arc<Connection>>>,
}

impl Registry {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Connection>>> {
        // The map stays consistent whatever a panicking holder did: every
        // critical section is a single insert, remove or lookup.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `connection` under `id`; `false` if the id is taken (ids are
    /// 88 random bits, so the caller just draws another).
    pub fn insert(&self, id: &str, connection: Arc<Connection>) -> bool {
        let mut open = self.open();
        if open.contains_key(id) {
            return false;
        }
        open.insert(id.to_owned(), connection);
        true
    }

    /// The open connection `id`, if any.
    pub fn get(&self, id: &str) -> Option<Arc<Connection>> {
        self.open().get(id).cloned()
    }

    /// Takes `id` out and asks it to close for `reason`; `false` when no
    /// such connection is open.
    pub fn close(&self, id: &str, reason: CloseReason) -> bool {
        let removed = self.open().remove(id);
        match removed {
            Some(connection) => {
                connection.close(reason);
                true
            }
            None => false,
        }
    }

    /// Takes `id` out without closing it (its task is ending it already).
    pub fn remove(&self, id: &str) {
        self.open().remove(id);
    }

    /// Sends `data` to connection `id` as one frame: text when it is
    /// UTF-8, binary otherwise. `false` when `id` is not open, or when the
    /// frame overflowed its queue, which closes the connection
    /// ([`MAX_QUEUED_BYTES`]).
    pub fn post(&self, id: &str, data: Bytes) -> bool {
        let Some(connection) = self.get(id) else { return false };
        let frame = match String::from_utf8(data.to_vec()) {
            Ok(text) => Message::text(text),
            Err(_) => Message::Binary(data),
        };
        if connection.enqueue(frame) {
            return true;
        }
        self.remove(id);
        false
    }

    /// What `GET @connections/{id}` answers, if `id` is open.
    pub fn describe(&self, id: &str) -> Option<Description> {
        self.get(id).map(|c| c.describe())
    }

    /// Asks every open connection to close for `reason` (shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        let all: Vec<Arc<Connection>> = self.open().drain().map(|(_, c)| c).collect();
        for connection in all {
            connection.close(reason.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_closes_the_connection_and_later_posts_are_gone() {
        let registry = Registry::default();
        let (connection, mut ends) = Connection::new(1, "127.0.0.1".into(), String::new());
        assert!(registry.insert("a=", connection.clone()));
        let frame = Bytes::from(vec![b'x'; 1024 * 1024]);
        for _ in 0..4 {
            assert!(registry.post("a=", frame.clone()));
        }
        assert!(!registry.post("a=", frame.clone()), "the fifth MiB passes the bound");
        assert_eq!(*ends.closing.borrow_and_update(), Some(CloseReason::SlowReader));
        assert!(!registry.post("a=", Bytes::from_static(b"x")));
        assert!(registry.describe("a=").is_none());
        assert_eq!(ends.outbound.try_recv().map(|(_, n)| n).ok(), Some(1024 * 1024));
    }

    #[test]
    fn only_the_first_close_reason_counts() {
        let (connection, ends) = Connection::new(1, "127.0.0.1".into(), String::new());
        assert!(connection.close(CloseReason::Deleted));
        assert!(!connection.close(CloseReason::Idle));
        assert_eq!(*ends.closing.borrow(), Some(CloseReason::Deleted));
    }

    #[test]
    fn close_reasons_map_to_api_gateway_codes() {
        assert_eq!(
            CloseReason::TooBig.disconnect(),
            Disconnect { status_code: 1009, reason: "Message too big".into() }
        );
        let silent = CloseReason::ByClient { code: 1005, reason: String::new() };
        assert_eq!(silent.disconnect().reason, "Client-side close frame status not set");
        let said = CloseReason::ByClient { code: 4000, reason: "bye".into() };
        assert_eq!(said.disconnect(), Disconnect { status_code: 4000, reason: "bye".into() });
    }
}
