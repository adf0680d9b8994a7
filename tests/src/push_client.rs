//! A live-status client that does what DESIGN §12 asks of one: it keeps
//! the latest entry of each user it watches from `snapshot`, `delta` and
//! `status` frames, follows `seq`, and on a gap subscribes again with the
//! last cursor it held before the gap. What it saw on the way (gaps,
//! repeated numbers, every entry per user) is kept for the test to judge.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use status_shared::domain::stream::Cursor;

use crate::local::WsClient;

/// One viewer's connection and what it holds.
pub struct PushClient {
    socket: WsClient,
    /// The ids it subscribed, in order.
    pub ids: Vec<u64>,
    /// Its connection id, read off the first cursor it was given.
    pub connection: String,
    /// The highest `seq` received.
    pub seq: u64,
    /// The last cursor received.
    pub cursor: Option<String>,
    /// The latest entry of each user, as sent (with `next`).
    pub entries: BTreeMap<u64, Value>,
    /// Every entry received per user, in arrival order.
    pub history: BTreeMap<u64, Vec<Value>>,
    /// `(expected, received)` for each data frame numbered past the next.
    pub gaps: Vec<(u64, u64)>,
    /// Each `seq` received again.
    pub repeats: Vec<u64>,
    /// Subscribes sent again with `since`, after a gap.
    pub resumes: usize,
    /// Answers to those received whole (a `delta`, or a `reset` snapshot).
    pub resumed: usize,
}

impl PushClient {
    /// Connects as end user `viewer`, subscribes to `ids`, and reads the
    /// whole snapshot (panics if it does not come within `wait`).
    pub async fn subscribe(ws_url: &str, viewer: u64, ids: &[u64], wait: Duration) -> Self {
        let socket = WsClient::connect(ws_url, Some(viewer)).await;
        let mut client = Self {
            socket,
            ids: ids.to_vec(),
            connection: String::new(),
            seq: 0,
            cursor: None,
            entries: BTreeMap::new(),
            history: BTreeMap::new(),
            gaps: Vec::new(),
            repeats: Vec::new(),
            resumes: 0,
            resumed: 0,
        };
        client.socket.send(&json!({"action": "subscribe", "user_ids": ids}).to_string()).await;
        client.read_until(wait, |c| c.entries.len() == ids.len() && c.cursor.is_some()).await;
        let cursor = client.cursor.as_deref().and_then(Cursor::decode).expect("a cursor this service issued");
        client.connection = cursor.connection.as_str().to_owned();
        client
    }

    /// Reads and applies frames until `done` holds; panics after `wait`
    /// with what it holds.
    pub async fn read_until(&mut self, wait: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + wait;
        while !done(&*self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.socket.next(left).await {
                Some(frame) => self.apply(frame).await,
                None => panic!(
                    "connection {} never got there within {wait:?}: seq {}, gaps {:?}, repeats {:?}, entries {:#?}",
                    self.connection, self.seq, self.gaps, self.repeats, self.entries
                ),
            }
        }
    }

    /// Reads and applies frames until none has come for `quiet`.
    pub async fn read_while_any(&mut self, quiet: Duration) {
        while let Some(frame) = self.socket.next(quiet).await {
            self.apply(frame).await;
        }
    }

    /// What it holds, in subscription order, without `next`: what the
    /// bulk read answers the same viewer.
    pub fn view(&self) -> Vec<Value> {
        self.ids.iter().filter_map(|id| self.entries.get(id)).map(without_next).collect()
    }

    /// The distinct successive entries of `user` received, without `next`.
    pub fn states_of(&self, user: u64) -> Vec<Value> {
        let mut states: Vec<Value> = Vec::new();
        for entry in self.history.get(&user).into_iter().flatten() {
            let entry = without_next(entry);
            if states.last() != Some(&entry) {
                states.push(entry);
            }
        }
        states
    }

    /// Whether every resume it sent has been answered whole.
    pub fn settled(&self) -> bool {
        self.resumed >= self.resumes
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.socket.close().await;
    }

    async fn apply(&mut self, frame: Value) {
        if !matches!(frame["type"].as_str(), Some("snapshot" | "delta" | "status")) {
            return; // pong, unsubscribed, error: no seq, no entries
        }
        let seq = frame["seq"].as_u64().expect("a data frame has a seq");
        let held = self.cursor.clone();
        let gap = seq > self.seq + 1;
        if seq <= self.seq {
            self.repeats.push(seq);
        } else if gap {
            self.gaps.push((self.seq + 1, seq));
        }
        self.seq = self.seq.max(seq);
        for entry in frame["statuses"].as_array().into_iter().flatten() {
            let user = entry["user_id"].as_u64().expect("an entry names its user");
            self.entries.insert(user, entry.clone());
            self.history.entry(user).or_default().push(entry.clone());
        }
        if let Some(cursor) = frame["cursor"].as_str() {
            self.cursor = Some(cursor.to_owned());
        }
        let whole = frame["part"] == frame["parts"];
        if whole && (frame["type"] == "delta" || frame["reset"] == true) {
            self.resumed += 1;
        }
        if gap {
            // A frame went missing: resume from the last cursor held
            // before it (DESIGN §12, `seq`).
            self.resumes += 1;
            let mut resume = json!({"action": "subscribe", "user_ids": self.ids});
            if let Some(since) = held {
                resume["since"] = Value::String(since);
            }
            self.socket.send(&resume.to_string()).await;
        }
    }
}

/// `entry` without its `next`.
pub fn without_next(entry: &Value) -> Value {
    let mut entry = entry.clone();
    if let Some(fields) = entry.as_object_mut() {
        fields.remove("next");
    }
    entry
}
